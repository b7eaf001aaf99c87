"""The four pre-training objectives from a config dict: each builds, trains a step through the trainer,
exports, loads back and reports its metrics; masked modelling also on video and audio encoders."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import TINY_ENCODERS
from polymodal.api import load
from polymodal.builders import build_system
from polymodal.config import from_dict
from polymodal.data.manifest import read_manifest
from polymodal.training.trainer import train

VIT = {"type": "vit", "image_size": 32, "patch_size": 8, "width": 32, "depth": 1, "num_heads": 2}
TASKS = {
    "siglip": ({"type": "contrastive", "loss": "siglip"}, {"image_to_text/R@1", "text_to_image/R@1"}),
    "itm": ({"type": "itm", "hidden": 16}, {"accuracy", "auc"}),
    "mlm": ({"type": "mlm"}, {"masked_accuracy"}),
    "mim": ({"type": "masked_modelling", "mask_ratio": 0.5}, {"masked_mse"}),
}


def config(data, tasks: dict, image=VIT) -> dict:
    return {
        "model": {"type": "joint_transformer", "width": 32, "depth": 1, "num_heads": 2, "embed_dim": 16,
                  "init_temperature": 0.1, "encoders": {**TINY_ENCODERS, "image": image},
                  "tokenizer": {"vocab_size": 200}},
        "tasks": tasks,
        "data": {"train": str(data / "train.jsonl"), "val": str(data / "val.jsonl")},
        "train": {"max_steps": 2, "batch_size": 8, "warmup_steps": 1, "log_every": 1, "progress": False},
    }


@pytest.mark.parametrize("name", [*TASKS, "all"])
def test_a_pretraining_config_trains_exports_and_evaluates(shapes_data, tmp_path, name):
    chosen = TASKS if name == "all" else {name: TASKS[name]}
    cfg = from_dict(config(shapes_data, {n: spec for n, (spec, _) in chosen.items()}), tmp_path)
    torch.manual_seed(0)
    run = train(cfg, tmp_path / "run", log=lambda _: None)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [line for line in lines if "loss" in line]
    assert len(losses) == 2 and all(all(f"loss/{n}" in line for n in chosen) for line in losses)
    model = load(run)
    results = model.evaluate(read_manifest(shapes_data / "val.jsonl"))
    for task, (_, metrics) in chosen.items():
        assert metrics <= set(results[task]), task
        assert results[task] == model.evaluate(read_manifest(shapes_data / "val.jsonl"), tasks=(task,))[task]
    if "mim" in chosen:  # the trained mask token came back with the weights
        assert model.system.model.backbone.encoders["image"].mask_token.abs().sum() > 0


@pytest.mark.parametrize("modality, encoder, data", [
    ("video", {"type": "tubelet_vit", "image_size": 16, "num_frames": 4, "patch_size": 8, "tubelet": 2,
               "width": 32, "depth": 1, "num_heads": 2}, (3, 4, 3, 16, 16)),
    ("audio", {"type": "spectrogram", "sample_rate": 8000, "duration": 0.5, "n_mels": 16, "hop_length": 160,
               "patch_freq": 8, "patch_time": 5, "width": 32, "depth": 1, "num_heads": 2}, (3, 4000)),
    ("image", {"type": "cnn", "image_size": 32, "channels": [8, 16]}, (3, 3, 32, 32)),
])
def test_masked_modelling_builds_on_every_supporting_encoder(tmp_path, modality, encoder, data):
    cfg = from_dict({"model": {"fusion": {"type": "late"}, "width": 32, "encoders": {modality: encoder}},
                     "tasks": {"m": {"type": "masked_modelling", "inputs": {modality: modality}}},
                     "data": {}, "train": {}}, tmp_path)
    torch.manual_seed(1)
    model = build_system(cfg).model
    batch = {"inputs": {modality: {"data": torch.randn(data)}}, "target": torch.zeros(3)}
    loss = model({"m": batch})["m"]["loss"]
    loss.backward()
    assert torch.isfinite(loss) and model.tasks["m"].head.weight.grad.abs().sum() > 0
    assert model.tasks["m"].predict(model, batch["inputs"]) == model.tasks["m"].predict(model, batch["inputs"])
