"""The optimiser's parts against hand values: which parameters decay, the schedule, gradient clipping."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from conftest import record_steps, tiny_config, write_config
from polymodal.config import load_config
from polymodal.layers import LearnedPositions
from polymodal.layers.markers import ModalityMarkers
from polymodal.training.optim import lr_at, make_optimizer, param_groups
from polymodal.training.trainer import Trainer


class _Parts(nn.Module):
    """One parameter of every kind the decay rule tells apart."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 4)
        self.norm = nn.LayerNorm(4)
        self.positions = LearnedPositions(4, max_len=5)
        self.cls = nn.Parameter(torch.zeros(1, 1, 4))
        self.markers = ModalityMarkers(["image", "text"], 4)
        self.logit_scale = nn.Parameter(torch.tensor(2.0))
        self.conv = nn.Conv2d(1, 2, 3)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def test_exactly_the_weight_matrices_decay():
    model = _Parts()
    names = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = param_groups(model, weight_decay=0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert sorted(names[id(p)] for p in decay["params"]) == ["conv.weight", "linear.weight"]
    assert sorted(names[id(p)] for p in no_decay["params"]) == [
        "cls", "conv.bias", "linear.bias", "logit_scale", "markers.marker.weight", "markers.type_embedding.weight",
        "norm.bias", "norm.weight", "positions.weight"]  # frozen parameters are in neither group


def test_adamw_decays_the_decay_group_only():
    # with zero gradients AdamW's update is the decoupled decay alone: w ← w − lr · wd · w
    model = _Parts()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = make_optimizer(model, lr=0.5, weight_decay=0.1)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for name, p in model.named_parameters():
        factor = 1 - 0.5 * 0.1 if name in ("conv.weight", "linear.weight") else 1.0
        torch.testing.assert_close(p.detach(), before[name] * factor, msg=name)


@pytest.mark.parametrize("step, expected", [
    (0, 0.25),  # warm-up: lr · (step + 1) / warmup_steps
    (1, 0.5),
    (3, 1.0),
    (4, 1.0),  # cosine starts at the top
    (9, 0.2 + 0.8 * 0.5),  # halfway through the 10 cosine steps
    (11, 0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * 0.7))),
    (14, 0.2),  # the floor, lr · min_lr_ratio
    (20, 0.2),  # and it stays there
])
def test_warmup_then_cosine_at_chosen_steps(step, expected):
    assert lr_at(step, lr=1.0, warmup_steps=4, max_steps=14, min_lr_ratio=0.2) == pytest.approx(expected)


def test_no_warmup_starts_at_the_full_rate():
    assert lr_at(0, lr=3e-4, warmup_steps=0, max_steps=10, min_lr_ratio=0.0) == pytest.approx(3e-4)
    assert lr_at(5, lr=3e-4, warmup_steps=0, max_steps=10, min_lr_ratio=0.0) == pytest.approx(1.5e-4)


@pytest.mark.parametrize("clip", [0.05, 0.0])
def test_clipped_gradient_norm_equals_the_threshold(shapes_data, tmp_path, clip):
    config = load_config(write_config(tmp_path, tiny_config(shapes_data, "vqa", max_steps=1, grad_clip=clip)))
    trainer = Trainer(config, tmp_path / "run", log=lambda _: None)
    seen = record_steps(trainer)
    values = trainer.train_step()
    assert values["grad_norm"] > 0.05  # the logged norm is the one before clipping
    if not clip:  # 0: no clipping: the optimiser gets the gradient as it is
        assert seen[0]["norm"] == pytest.approx(values["grad_norm"], rel=1e-5)
    else:
        assert seen[0]["norm"] == pytest.approx(clip, rel=1e-4)
