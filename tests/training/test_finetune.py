"""Fine-tuning: per-group learning-rate multipliers and LoRA (merged export, frozen base, resume)."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from conftest import record_steps, tiny_config, write_config
from polymodal.api import load
from polymodal.config import load_config
from polymodal.data.loader import TaskDataset, eval_loader
from polymodal.errors import ConfigError
from polymodal.training.checkpoint import WEIGHTS
from polymodal.training.lora import add_lora, merged_state_dict
from polymodal.training.optim import lr_at, param_groups
from polymodal.training.trainer import Trainer

LORA = {"targets": [r"fusion\..*\.(qkv|out)"], "r": 4, "alpha": 8}


def quiet(config, out, **kw):
    return Trainer(config, out, log=lambda _: None, **kw)


# --- learning-rate multipliers -----------------------------------------------------------------------------


def assert_same_outputs(adapted, merged, trainer):
    """The model with its adapters and the merged one give the same pooled vectors on a validation batch."""
    dataset = TaskDataset(trainer.val_records["vqa"], adapted.tasks["vqa"].data, trainer.system.processors)
    inputs = next(iter(eval_loader(dataset, 16)))["inputs"]
    adapted.eval()
    with torch.no_grad():
        assert (adapted.encode(inputs).pooled - merged.encode(inputs).pooled).abs().max().item() < 1e-5

def test_lr_mult_groups_keep_decay_apart_and_scale_the_schedule(shapes_data, tmp_path):
    config = load_config(write_config(tmp_path, tiny_config(
        shapes_data, "vqa", max_steps=3, warmup_steps=2, lr_mult={"encoders.text": 0.1, "backbone.fusion": 0.5,
                                                                  "encoders": 0.2})))
    trainer = quiet(config, tmp_path / "run")
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    groups = [(g["lr_mult"], g["weight_decay"], sorted(names[id(p)] for p in g["params"]))
              for g in trainer.optimizer.param_groups]
    for mult, decay, members in groups:
        for name in members:  # the longest prefix wins: encoders.text over encoders
            want = (0.1 if name.startswith("backbone.encoders.text.") else 0.2 if name.startswith("backbone.encoders.")
                    else 0.5 if name.startswith("backbone.fusion.") else 1.0)
            assert mult == want, name
        assert decay == (0.0 if all(trainer.model.get_parameter(n).ndim < 2 or "positions" in n or "cls" in n
                                    or "marker" in n or "type_embed" in n for n in members) else 0.05)
    assert sorted({m for m, _, _ in groups}) == [0.1, 0.2, 0.5, 1.0]
    assert sum(len(m) for _, _, m in groups) == sum(p.requires_grad for p in trainer.model.parameters())
    seen = record_steps(trainer)
    trainer.fit()
    kw = dict(lr=3e-3, warmup_steps=2, max_steps=3, min_lr_ratio=config.train.min_lr_ratio)
    assert [s["lr"] for s in seen] == [[pytest.approx(lr_at(k, **kw) * m) for m, _, _ in groups] for k in range(3)]


def test_lr_mult_with_sgd_moves_each_group_by_its_rate():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    groups = param_groups(model, 0.0, {"1": 0.25})
    optimizer = torch.optim.SGD(groups, lr=1.0)
    for g in optimizer.param_groups:
        g["lr"] = 0.1 * g["lr_mult"]
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()
    for rate, b, p in zip((0.1, 0.1, 0.025, 0.025), before, model.parameters()):  # w ← w − lr · mult · 1
        torch.testing.assert_close(p.detach(), b - rate)


def test_unknown_lr_mult_prefix_names_the_modules(shapes_data, tmp_path):
    config = load_config(write_config(tmp_path, tiny_config(shapes_data, "vqa", lr_mult={"encoders.txt": 0.1})))
    with pytest.raises(ConfigError, match=r"train.lr_mult.encoders.txt: 'encoders.txt' matches no parameter; "
                                          r"modules: .*backbone.encoders.text"):
        quiet(config, tmp_path / "run")


# --- LoRA --------------------------------------------------------------------------------------------------

def lora_config(data, **train):
    return tiny_config(data, "vqa", lora=LORA, **train)


def test_lora_trains_adapters_and_heads_only_and_exports_merged_weights(shapes_data, tmp_path):
    config = load_config(write_config(tmp_path, lora_config(shapes_data, max_steps=4, lr=3e-2)))
    lines = []
    trainer = Trainer(config, tmp_path / "run", log=lines.append)
    model = trainer.model
    adapted = [n for n, m in model.named_modules() if hasattr(m, "lora_A")]
    assert adapted and all(re.fullmatch(r"backbone\.fusion\..*\.(qkv|out)", n) for n in adapted)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if ".lora_" in n or n.startswith("tasks.")}
    total = sum(p.numel() for p in model.parameters())
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert f"trainable {count:,} of {total:,} parameters ({100 * count / total:.1f}%)" in lines
    before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainer.fit()
    for name, p in model.named_parameters():
        if name in before:
            assert torch.equal(p.detach(), before[name]), name  # the base weights never move
    assert any(not torch.equal(m.lora_B["finetune"].weight, torch.zeros_like(m.lora_B["finetune"].weight))
               for n, m in model.named_modules() if n in adapted)

    exported = load_file(str(tmp_path / "run" / "model" / WEIGHTS))
    plain = tiny_config(shapes_data, "vqa")
    from polymodal.builders import build_system
    reference = build_system(load_config(write_config(tmp_path, plain, "plain.yaml")), trainer.train_records["vqa"])
    assert sorted(exported) == sorted(reference.model.state_dict())  # the keys of a model without LoRA

    served = load(tmp_path / "run")  # no peft layers: plain nn.Linear
    assert not any(hasattr(m, "lora_A") for m in served.system.model.modules())
    assert_same_outputs(model, served.system.model, trainer)


def test_lora_resume_is_exact(shapes_data, tmp_path):
    config = load_config(write_config(tmp_path, lora_config(shapes_data, max_steps=5, ckpt_every=2)))
    quiet(config, tmp_path / "full").fit()
    quiet(config, tmp_path / "cut", stop_at=3).fit()
    quiet(config, tmp_path / "cut", resume=True).fit()
    def losses(run):
        return [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]

    assert losses(tmp_path / "cut") == losses(tmp_path / "full")
    full = load_file(str(tmp_path / "full" / "model" / WEIGHTS))
    cut = load_file(str(tmp_path / "cut" / "model" / WEIGHTS))
    assert all(torch.equal(full[k], cut[k]) for k in full)


def test_lora_train_prefixes_and_bad_targets(shapes_data, tmp_path):
    config = load_config(write_config(tmp_path, tiny_config(
        shapes_data, "vqa", lora={**LORA, "train": ["encoders.image"]})))
    trainer = quiet(config, tmp_path / "run")
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert {n for n in trainable if n.startswith("backbone.encoders.image.")} == \
        {n for n, _ in trainer.model.named_parameters() if n.startswith("backbone.encoders.image.")}
    bad = load_config(write_config(tmp_path, tiny_config(shapes_data, "vqa", lora={"targets": ["nothing"]}), "b.yaml"))
    with pytest.raises(ConfigError, match=r"train.lora.targets: \['nothing'\] match no linear or convolution "
                                          r"layer; the model's: .*fusion"):
        quiet(bad, tmp_path / "run2")
    with pytest.raises(ConfigError, match="train.lora: unknown key 'rank'; allowed keys: targets, r, alpha, dropout, "
                                          "train"):
        load_config(write_config(tmp_path, tiny_config(shapes_data, "vqa", lora={"targets": ["x"], "rank": 4}),
                                 "c.yaml"))


def test_lora_on_a_hugging_face_model_nested_in_ours_merges_exactly():
    from transformers import BertConfig, BertModel

    class Wrapper(nn.Module):  # an encoder that wraps a Hugging Face model, plus a head
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.backbone = nn.Module()
            self.backbone.encoder = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
                                                         num_attention_heads=2, intermediate_size=32))
            self.tasks = nn.ModuleDict({"head": nn.Linear(16, 3)})

        def forward(self, ids):
            return self.tasks["head"](self.backbone.encoder(input_ids=ids).last_hidden_state[:, 0])

    model = Wrapper().eval()
    plain_keys = sorted(model.state_dict())
    adapted = add_lora(model, {"targets": [r"encoder\.encoder\.layer\.\d+\.attention\.self\.(query|value)"], "r": 2})
    assert len(adapted) == 4
    with torch.no_grad():  # peft starts B at zero: give the adapters something to merge
        for name, module in model.named_modules():
            if hasattr(module, "lora_B"):
                module.lora_B["finetune"].weight.normal_()
    ids = torch.randint(0, 50, (3, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(ids)
    merged = merged_state_dict(model)
    assert sorted(merged) == plain_keys
    fresh = Wrapper().eval()
    fresh.load_state_dict(merged)
    with torch.no_grad():
        assert (fresh(ids) - expected).abs().max().item() < 1e-5


def test_lora_on_a_pretrained_hugging_face_encoder_through_the_trainer(shapes_data, tmp_path):
    import hf_folders

    config = tiny_config(shapes_data, "vqa", max_steps=3, lr=3e-2,
                         lora={"targets": [r"encoders\.text\.model\.encoder\.layer\.\d+\.attention\.self\.(query|value)",
                                           r"fusion\..*\.qkv"], "r": 2})
    config["model"]["encoders"] = {**config["model"]["encoders"],
                                   "text": {"type": "hf", "path": str(hf_folders.bert()), "max_length": 24}}
    del config["model"]["tokenizer"]
    trainer = quiet(load_config(write_config(tmp_path, config)), tmp_path / "run")
    model = trainer.model
    assert sum(hasattr(m, "lora_A") for m in model.backbone.encoders["text"].modules()) == 4
    trainer.fit()
    served = load(tmp_path / "run")
    dataset = TaskDataset(trainer.val_records["vqa"], model.tasks["vqa"].data, trainer.system.processors)
    inputs = next(iter(eval_loader(dataset, 32)))["inputs"]
    model.eval()
    with torch.no_grad():
        gap = (model.encode(inputs).pooled - served.system.model.encode(inputs).pooled).abs().max().item()
    assert gap < 1e-5
    assert torch.equal(served.system.model.state_dict()["backbone.encoders.text.model.embeddings.word_embeddings.weight"],
                       model.state_dict()["backbone.encoders.text.model.embeddings.word_embeddings.weight"])


def test_lora_adapts_convolutions_and_merges_them(shapes_data, tmp_path):
    config = load_config(write_config(tmp_path, tiny_config(
        shapes_data, "vqa", max_steps=3, lora={"targets": [r"encoders\.image\..*"], "r": 2})))
    trainer = quiet(config, tmp_path / "run")
    from peft.tuners.lora import LoraLayer

    convs = [n for n, m in trainer.model.named_modules() if isinstance(m, LoraLayer)
             and isinstance(m.get_base_layer(), torch.nn.Conv2d)]
    assert convs and all(n.startswith("backbone.encoders.image.") for n in convs)
    trainer.fit()
    model = trainer.model
    with torch.no_grad():  # make the adapters matter, then the merged weights must give the same outputs
        for n, m in model.named_modules():
            if isinstance(m, LoraLayer):
                m.lora_B["finetune"].weight.normal_(0, 0.05)
    from polymodal.training.lora import merged_state_dict

    served = load(tmp_path / "run")
    served.system.model.load_state_dict(merged_state_dict(model))
    assert_same_outputs(model, served.system.model, trainer)
    plain = load(tmp_path / "run").system.model  # the export, merged before the perturbation
    assert not any(hasattr(m, "lora_A") for m in plain.modules())
