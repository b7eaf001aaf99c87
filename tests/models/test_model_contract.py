"""Every registered model × compatible task: builds from config, finite loss, every parameter learns."""

import pytest
import torch

from conftest import TINY_ENCODERS
from polymodal.build import build_system
from polymodal.config import from_dict
from polymodal.data.loader import TaskDataset
from polymodal.data.manifest import read_manifest
from polymodal.errors import ConfigError
from polymodal.models import MODELS
from polymodal.tasks import TASKS

TASK_EXTRAS = {"matching": {"inputs": {"image": "image", "text": "text"}}}  # does this caption fit the picture?
COMBINATIONS = [(m, t) for m in MODELS for t in TASKS]


def build(data, model_type, task_type, encoders=TINY_ENCODERS, **model):
    config = from_dict({
        "model": {"type": model_type, "width": 32, "encoders": encoders, "tokenizer": {"vocab_size": 200}, **model},
        "tasks": {"t": {"type": task_type, **TASK_EXTRAS.get(task_type, {})}},
        "data": {}, "train": {},
    }, data)
    return build_system(config, read_manifest(data / "train.jsonl"))


@pytest.mark.parametrize("model_type, task_type", COMBINATIONS)
def test_forward_loss_and_gradients(shapes_data, model_type, task_type):
    torch.manual_seed(0)
    joint_contrastive = model_type == "joint_transformer" and task_type == "contrastive"
    system = build(shapes_data, model_type, task_type, **({"embed_dim": 16} if joint_contrastive else {}))
    task = system.model.tasks["t"]
    dataset = TaskDataset(read_manifest(shapes_data / "train.jsonl")[:8], task, system.processors)
    batch = dataset.collate([dataset[i] for i in range(8)])
    out = system.model({"t": batch})["t"]
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    unused = []  # parameters a task legitimately leaves alone
    if model_type == "dual_encoder":
        unused += ["backbone.fusion"] if task_type == "contrastive" else ["backbone.logit_scale",
                                                                         "backbone.projections"]
    if joint_contrastive:  # aligned before fusion: the joint layers are for the fused tasks
        unused += ["backbone.fusion", "backbone.cls", "backbone.transformer", "backbone.positions"]
    if task_type == "classification":  # image only: the text encoder is not run
        unused += ["backbone.encoders.text"]
    for name, p in system.model.named_parameters():
        if any(name.startswith(u) for u in unused):
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_one_step_of_sgd_lowers_the_loss(shapes_data):
    torch.manual_seed(0)
    system = build(shapes_data, "joint_transformer", "vqa")
    task = system.model.tasks["t"]
    dataset = TaskDataset(read_manifest(shapes_data / "train.jsonl")[:16], task, system.processors)
    batch = dataset.collate([dataset[i] for i in range(16)])
    opt = torch.optim.Adam(system.model.parameters(), lr=1e-3)
    first = system.model({"t": batch})["t"]["loss"]
    for _ in range(20):
        loss = system.model({"t": batch})["t"]["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first.item()


def test_contrastive_needs_an_embedding_space(shapes_data):
    with pytest.raises(ConfigError, match="needs per-modality embeddings.*model.embed_dim"):
        build(shapes_data, "joint_transformer", "contrastive")


def test_joint_embedding_space_has_the_dual_encoders_weight_names(shapes_data):
    """So `train.init_from` carries a CLIP-style space into a joint model (and back)."""
    dual = build(shapes_data, "dual_encoder", "contrastive", embed_dim=16).model.state_dict()
    joint = build(shapes_data, "joint_transformer", "contrastive", embed_dim=16).model.state_dict()
    space = {k: v.shape for k, v in dual.items() if k.startswith(("backbone.projections", "backbone.logit_scale"))}
    assert space and space == {k: joint[k].shape for k in space}
    plain = build(shapes_data, "joint_transformer", "vqa").model.state_dict()
    assert not any(k.startswith("backbone.projections") for k in plain)  # no space unless asked for


def test_vit_image_encoder_composes_too(shapes_data):
    encoders = {**TINY_ENCODERS, "image": {"type": "vit", "image_size": 32, "patch_size": 8, "width": 32,
                                           "depth": 1, "num_heads": 2}}
    system = build(shapes_data, "joint_transformer", "vqa", encoders)
    task = system.model.tasks["t"]
    dataset = TaskDataset(read_manifest(shapes_data / "train.jsonl")[:4], task, system.processors)
    batch = dataset.collate([dataset[i] for i in range(4)])
    image = system.model.encode(batch["inputs"]).modalities["image"]
    assert image.tokens.shape == (4, 1 + (32 // 8) ** 2, 32)  # CLS + a 4 × 4 grid of 8 px patches
    system.model({"t": batch})["t"]["loss"].backward()
    vit = system.model.backbone.encoders["image"]
    for name, p in vit.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_gru_text_and_positional_pooling_compose(shapes_data):
    torch.manual_seed(0)
    encoders = {**TINY_ENCODERS, "text": {"type": "gru", "width": 16, "max_length": 24}}
    system = build(shapes_data, "joint_transformer", "vqa", encoders, pooling="positional", max_length=96)
    task = system.model.tasks["t"]
    dataset = TaskDataset(read_manifest(shapes_data / "train.jsonl")[:8], task, system.processors)
    out = system.model({"t": dataset.collate([dataset[i] for i in range(8)])})["t"]
    out["loss"].backward()
    for name, p in system.model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
