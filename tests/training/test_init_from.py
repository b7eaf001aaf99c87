"""Warm starts (`train.init_from`): exactly what loads, what is skipped, and why."""

from __future__ import annotations

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from conftest import tiny_config, write_config
from polymodal.config import load_config
from polymodal.training.checkpoint import WEIGHTS, load_matching_weights
from polymodal.training.trainer import Trainer


def test_matching_names_and_shapes_load_and_the_rest_is_reported(tmp_path):
    torch.manual_seed(0)
    source = nn.ModuleDict({"a": nn.Linear(4, 3), "b": nn.Linear(4, 5), "c": nn.Linear(2, 2)})
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, tmp_path / "w.safetensors")
    model = nn.ModuleDict({"a": nn.Linear(4, 3), "b": nn.Linear(4, 6), "d": nn.Linear(2, 2)})
    before = {k: v.clone() for k, v in model.state_dict().items()}

    warm = load_matching_weights(model, tmp_path / "w.safetensors")

    assert warm.loaded == ["a.bias", "a.weight"]
    assert warm.reshaped == {"b.bias": ((5,), (6,)), "b.weight": ((5, 4), (6, 4))}
    assert warm.missing == ["d.bias", "d.weight"]
    assert warm.unused == ["c.bias", "c.weight"]
    state = model.state_dict()
    for name in ("a.weight", "a.bias"):
        assert torch.equal(state[name], source.state_dict()[name])
    for name in ("b.weight", "b.bias", "d.weight", "d.bias"):  # left as they were initialised
        assert torch.equal(state[name], before[name])
    line = warm.summary("w.safetensors")
    assert line.startswith("initialised 2 of 6 weight tensors from w.safetensors")
    assert "skipped 2 of another shape (b.bias (5,) there vs (6,) here" in line
    assert "2 not in the source (d.bias, d.weight)" in line and "2 of the source's unused" in line


def test_init_from_a_run_carries_the_encoders_and_not_a_head_of_another_vocabulary(shapes_data, tmp_path):
    vqa = load_config(write_config(tmp_path, tiny_config(shapes_data, "vqa", max_steps=2), "vqa.yaml"))
    Trainer(vqa, tmp_path / "vqa", log=lambda _: None).fit()
    source = load_file(str(tmp_path / "vqa" / "model" / WEIGHTS))

    config = tiny_config(shapes_data, "vqa", max_steps=1, init_from=str(tmp_path / "vqa"))
    config["tasks"] = {"vqa": {"type": "vqa", "hidden": 24}}  # another head width: its first layers differ
    lines = []
    trainer = Trainer(load_config(write_config(tmp_path, config, "fine.yaml")), tmp_path / "fine", log=lines.append)
    state = trainer.model.state_dict()
    encoders = [k for k in state if k.startswith("backbone.encoders.")]
    assert encoders and all(torch.equal(state[k], source[k]) for k in encoders)
    assert not torch.equal(state["tasks.vqa.head.1.bias"], source["tasks.vqa.head.1.bias"][:24])
    assert any("skipped" in line and "tasks.vqa.head.1.bias (32,) there vs (24,) here" in line for line in lines)
