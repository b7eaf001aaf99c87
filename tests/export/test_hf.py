"""`polymodal export --format hf`: a decoder-only model of a Hugging Face CLIP vision encoder and a Hugging Face
causal LM becomes a LLaVA folder that `transformers` loads, with Polymodal's next-token logits (atol 1e-4) and
greedy tokens; a model that does not map is refused with what does not."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, LlavaForConditionalGeneration

from polymodal.api import load
from polymodal.cli import main
from polymodal.models.tiny_lm import save_tiny_lm
from tests import hf_folders
from serving.conftest import train_shipped


@pytest.fixture(scope="module")
def llava(tmp_path_factory, shapes_data):
    root = tmp_path_factory.mktemp("llava")
    texts = [json.loads(line)["text"] for line in (shapes_data / "train.jsonl").read_text().splitlines()]
    lm = save_tiny_lm(root / "lm", "gpt2", texts, width=32, layers=2)
    run = train_shipped("llava-tiny.yaml", shapes_data, root / "run", steps=4,
                        extra=(f"model.decoder.path={lm}", f"model.encoders.image={{type: hf, path: {hf_folders.clip()}}}",
                               "model.decoder.lora.r=4", "train.freeze=[]"))
    assert main(["export", str(run), "--format", "hf", "--out", str(root / "hf")]) == 0
    return run, root / "hf"


def test_transformers_loads_it_and_gives_polymodals_logits_and_greedy_tokens(llava, shapes_data):
    run, folder = llava
    ours = load(run, device="cpu")
    theirs = LlavaForConditionalGeneration.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    head = ours.system.model.tasks["caption"]
    records = [json.loads(line) for line in (shapes_data / "test.jsonl").read_text().splitlines()][:4]
    prompt = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}]}], add_generation_prompt=True)
    for record in records:
        image = Image.open(shapes_data / record["image"]).convert("RGB")
        inputs = processor(images=image, text=prompt, return_tensors="pt")
        with torch.no_grad():
            session = head.decoder.module.start(ours.system.model.encode(ours._inputs(image=[image]), fuse=False))
            prompt_ids = [head.data.tokenizer.cls_id, *head.data.prompt_from_text(None)]
            mine = session.prefill(torch.tensor([prompt_ids]))
            logits = theirs(**inputs).logits[0, -1, : mine.shape[-1]]
        torch.testing.assert_close(logits, mine[0], atol=1e-4, rtol=0)
        out = theirs.generate(**inputs, max_new_tokens=head.generation.max_new_tokens, do_sample=False)
        new = out[0, inputs["input_ids"].shape[1]:].tolist()
        stop = next((i for i, t in enumerate(new) if t in head.generation.stop_ids), len(new))
        assert head.data.tokenizer.decode(new[:stop]) == ours.caption(image)


def test_models_that_do_not_map_are_refused_naming_what(tmp_path, shapes_data, capsys):
    run = train_shipped("caption-image.yaml", shapes_data, tmp_path / "caption", steps=1)
    assert main(["export", str(run), "--format", "hf", "--out", str(tmp_path / "hf")]) == 1
    assert "not a decoder-only LM" in capsys.readouterr().err
