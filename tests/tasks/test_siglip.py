"""SigLIP's sigmoid loss against a hand computation, and the contrastive task's choice of loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_ENCODERS
from polymodal.builders import build_system
from polymodal.config import from_dict
from polymodal.data.manifest import read_manifest
from polymodal.errors import ConfigError
from polymodal.models.output import ModelOutput
from polymodal.tasks.contrastive import ContrastiveData, ContrastiveTask, info_nce, siglip


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def siglip_by_loops(a: torch.Tensor, b: torch.Tensor, t: float, bias: float) -> float:
    n = a.shape[0]
    total = 0.0
    for i in range(n):
        for j in range(n):
            z = 1.0 if i == j else -1.0
            total -= log_sigmoid(z * (t * float(a[i] @ b[j]) + bias))
    return total / n


def test_siglip_on_a_2x2_example_computed_by_hand():
    # a = b = identity: cos = 1 on the diagonal, 0 off it; t = 2, bias = -1
    # diagonal: -log σ(2 - 1) = -log σ(1) each; off-diagonal: -log σ(-(0 - 1)) = -log σ(1) each
    a = b = torch.eye(2)
    expected = 4 * math.log1p(math.exp(-1.0)) / 2  # four pairs, divided by B = 2: 0.6265...
    assert siglip(a, b, torch.tensor(2.0), torch.tensor(-1.0)).item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.626523, abs=1e-6)


def test_siglip_on_a_3x3_example_equals_the_sum_over_pairs():
    torch.manual_seed(0)
    a, b = F.normalize(torch.randn(3, 4), dim=-1), F.normalize(torch.randn(3, 4), dim=-1)
    for t, bias in ((10.0, -10.0), (3.0, 0.5)):
        assert siglip(a, b, torch.tensor(t), torch.tensor(bias)).item() == pytest.approx(
            siglip_by_loops(a, b, t, bias), abs=1e-5)


def test_dropping_the_negatives_or_the_bias_changes_the_value():
    torch.manual_seed(1)
    a, b = F.normalize(torch.randn(3, 4), dim=-1), F.normalize(torch.randn(3, 4), dim=-1)
    t, bias = 5.0, -2.0
    full = siglip(a, b, torch.tensor(t), torch.tensor(bias)).item()
    positives_only = sum(-log_sigmoid(t * float(a[i] @ b[i]) + bias) for i in range(3)) / 3
    without_bias = siglip_by_loops(a, b, t, 0.0)
    mean_not_sum = full * 3 / 9  # dividing by B² instead of B
    for wrong in (positives_only, without_bias, mean_not_sum):
        assert abs(full - wrong) > 0.05


def test_the_task_uses_the_model_scale_and_its_own_bias_and_infonce_stays_the_default():
    torch.manual_seed(2)
    image, text = F.normalize(torch.randn(4, 6), dim=-1), F.normalize(torch.randn(4, 6), dim=-1)
    out = ModelOutput(modalities={}, pooled=None, embeddings={"image": image, "text": text},
                      logit_scale=torch.tensor(7.0))
    task = ContrastiveTask(ContrastiveData(), loss="siglip", bias_init=-3.0)
    assert task.bias.item() == -3.0 and ContrastiveTask(ContrastiveData(), loss="siglip").bias.item() == -10.0
    assert task(out, torch.zeros(4))["loss"].item() == pytest.approx(siglip_by_loops(image, text, 7.0, -3.0), abs=1e-5)
    default = ContrastiveTask(ContrastiveData())
    assert not list(default.parameters())  # InfoNCE runs keep their state dict
    assert torch.equal(default(out, torch.zeros(4))["loss"], info_nce(image, text, torch.tensor(7.0)))
    task(out, torch.zeros(4))["loss"].backward()
    assert task.bias.grad is not None and task.bias.grad.item() != 0.0  # the bias learns


def build(data, **task):
    config = from_dict({"model": {"type": "dual_encoder", "width": 32, "embed_dim": 16, "encoders": TINY_ENCODERS,
                                  "tokenizer": {"vocab_size": 200}},
                        "tasks": {"r": {"type": "contrastive", **task}}, "data": {}, "train": {}}, data)
    return build_system(config, read_manifest(data / "train.jsonl"))


def test_config_chooses_the_loss_and_names_a_wrong_key(shapes_data):
    assert build(shapes_data, loss="siglip").model.tasks["r"].loss == "siglip"
    with pytest.raises(ConfigError, match=r"tasks.r.loss: expected one of infonce, siglip, got 'sigmoid'"):
        build(shapes_data, loss="sigmoid")
    with pytest.raises(ConfigError, match=r"tasks.r.bias_init: only the siglip loss has a bias"):
        build(shapes_data, bias_init=-5.0)
