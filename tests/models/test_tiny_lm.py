"""`polymodal tiny-lm`: a Hugging Face causal LM folder that loads offline, pre-trained on a manifest's text."""

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")

from polymodal.data.manifest import read_manifest  # noqa: E402
from polymodal.modalities.text.tokenizer import TextTokenizer  # noqa: E402
from polymodal.models.tiny_lm import save_tiny_lm  # noqa: E402


def lm_loss(folder, texts):
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    tokenizer = TextTokenizer.from_hf(folder)
    ids, mask = tokenizer.encode_batch(texts, 48)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask.long()).logits[:, :-1]
    return F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].masked_fill(~mask[:, 1:], -100).flatten(),
                           ignore_index=-100).item()


def test_pretraining_teaches_the_lm_the_captions_language(shapes_data, tmp_path):
    train = [r["text"] for r in read_manifest(shapes_data / "train.jsonl")]
    held_out = [r["text"] for r in read_manifest(shapes_data / "val.jsonl")]
    random = save_tiny_lm(tmp_path / "random", "llama", train)
    trained = save_tiny_lm(tmp_path / "trained", "llama", train, pretrain_steps=120)
    assert lm_loss(trained, held_out) < lm_loss(random, held_out) / 2  # on captions it never saw
    tokenizer = TextTokenizer.from_hf(trained)
    assert tokenizer.decode(tokenizer.ids("a red circle")) == "a red circle"
    assert tokenizer.cls_id is not None and tokenizer.sep_id is not None
    assert (tokenizer.cls_id, tokenizer.sep_id) == (tokenizer.tokenizer.token_to_id("[CLS]"),
                                                    tokenizer.tokenizer.token_to_id("[SEP]"))


def test_the_command_writes_a_folder_auto_classes_load(shapes_data, tmp_path):
    out = tmp_path / "lm"
    r = subprocess.run([sys.executable, "-m", "polymodal.cli", "tiny-lm", "--data", str(shapes_data / "train.jsonl"),
                        "--out", str(out), "--width", "32", "--pretrain-steps", "2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "pre-trained 2 steps" in r.stdout
    model = transformers.AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    assert model.config.model_type == "gpt2" and model.config.n_embd == 32
