"""Distillation from a frozen teacher: the losses and metrics by hand, the teacher's cache, a student that
learns the teacher's space and is saved without it, teachers from HF folders and from Polymodal runs."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
import torch.nn.functional as F

import hf_folders
from conftest import TINY_ENCODERS, write_config
from polymodal.api import load
from polymodal.builders import build_system
from polymodal.config import load_config
from polymodal.data.manifest import read_manifest
from polymodal.errors import ConfigError
from polymodal.models.output import ModelOutput
from polymodal.models.teacher import Teacher
from polymodal.tasks.distillation import DistillationData, DistillationTask
from polymodal.training.trainer import Trainer


class _Processor:
    def prepare(self, value, generator):
        return value

    def collate(self, items):
        return {"data": torch.tensor(items, dtype=torch.float32)}


def _teacher(vectors: dict[float, list[float]], calls: list | None = None) -> Teacher:
    """A teacher whose vector for input x is `vectors[x]`; `calls` records each batch it computes."""
    def run(module, batch):
        if calls is not None:
            calls.append(batch["data"].tolist())
        return torch.tensor([vectors[x] for x in batch["data"].tolist()])

    return Teacher(lambda: torch.nn.Identity(), _Processor(), len(next(iter(vectors.values()))), run, "table")


def _task(teacher, **kwargs) -> DistillationTask:
    return DistillationTask(DistillationData(inputs={"text": "text"}, teacher_processor=teacher.processor),
                            teacher=teacher, width=2, **kwargs)


def _out(embedding: torch.Tensor) -> ModelOutput:
    return ModelOutput(modalities={}, pooled=None, embeddings={"text": embedding})


TABLE = {1.0: [3.0, 4.0], 2.0: [0.0, -2.0]}


def _target(task, xs):
    return task.data.collate_targets([task.data.target({"text": x}) for x in xs])


def test_cosine_loss_is_one_minus_the_cosine_by_hand():
    task = _task(_teacher(TABLE), embed_dim=2)
    student = torch.tensor([[0.6, 0.8], [1.0, 0.0]])  # cos 1 with (3, 4); cos 0 with (0, -2)
    loss = task(_out(student), _target(task, [1.0, 2.0]))["loss"]
    assert loss.item() == pytest.approx((0.0 + 1.0) / 2)


def test_mse_in_the_shared_space_compares_with_the_normalised_teacher():
    task = _task(_teacher(TABLE), embed_dim=2, loss="mse")
    student = torch.tensor([[1.0, 0.0], [0.0, -1.0]])
    # teacher (3, 4) → (0.6, 0.8): squared differences 0.16 + 0.64; (0, -2) → (0, -1): 0
    loss = task(_out(student), _target(task, [1.0, 2.0]))["loss"]
    assert loss.item() == pytest.approx((0.16 + 0.64 + 0 + 0) / 4)


def test_outside_the_shared_space_a_linear_head_maps_the_pooled_vector():
    from polymodal.modalities.base import EncoderOutput

    task = _task(_teacher(TABLE), embed_dim=None, loss="mse")
    with torch.no_grad():
        task.head.weight.copy_(torch.eye(2) * 2)
        task.head.bias.zero_()
    pooled = torch.tensor([[1.5, 2.0], [0.0, -1.0]])
    enc = EncoderOutput(tokens=pooled[:, None], mask=torch.ones(2, 1, dtype=torch.bool), pooled=pooled)
    out = ModelOutput(modalities={"text": enc}, pooled=None)
    # student (3, 4) and (0, -2): equal to the raw teacher vectors, so the loss is 0
    assert task(out, _target(task, [1.0, 2.0]))["loss"].item() == pytest.approx(0.0)


def test_logit_distillation_is_hintons_kl_times_tau_squared():
    logits = {1.0: [2.0, 0.0, -1.0]}
    task = _task(_teacher(logits), target="logits", temperature=2.0)
    student = torch.tensor([[0.0, 1.0, 0.0]])
    with torch.no_grad():
        task.head.weight.copy_(torch.eye(3)[:, :2] * 0)
    p = F.softmax(torch.tensor([2.0, 0.0, -1.0]) / 2, -1)
    q = F.softmax(student[0] / 2, -1)
    expected = (p * (p.log() - q.log())).sum().item() * 4
    assert task._loss(student, torch.tensor([logits[1.0]])).item() == pytest.approx(expected, rel=1e-6)


def test_the_teacher_computes_each_input_once():
    calls = []
    task = _task(_teacher(TABLE, calls), embed_dim=2)
    student = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    for xs in ([1.0, 2.0], [2.0, 1.0], [1.0, 1.0]):
        task(_out(student[: len(xs)]), _target(task, xs))
    assert calls == [[1.0, 2.0]]
    second = task.teacher[0](_target(task, [2.0, 1.0])["batch"], ["2.0", "1.0"])
    assert torch.equal(second, torch.tensor([TABLE[2.0], TABLE[1.0]]))


def test_metrics_by_hand():
    data = DistillationData(inputs={"text": "text"}, teacher_processor=_Processor())
    predictions = [{"student": torch.tensor(s), "teacher": torch.tensor(t), "kind": "embedding"}
                   for s, t in [([1.0, 0.0], [1.0, 0.0]), ([1.0, 0.1], [0.6, 0.8]), ([0.0, 1.0], [0.0, 2.0])]]
    records = [{"text": "a"}, {"text": "b"}, {"text": "c"}]
    metrics = data.metrics(predictions, records)
    # cosines 1, 0.68/|(1, 0.1)|, 1; nearest teachers: 0, 0 (a miss: 0.995 against 0.677), 2
    assert metrics["cosine"] == pytest.approx((1 + 0.68 / math.sqrt(1.01) + 1) / 3)
    assert metrics["teacher_top1"] == pytest.approx(2 / 3)
    # a repeated input: its nearest teacher vector is its twin's (index 0), a hit all the same
    twin = {"student": torch.tensor([1.0, 0.0]), "teacher": torch.tensor([0.9, 0.1]), "kind": "embedding"}
    assert data.metrics(predictions + [twin], records + [{"text": "a"}])["teacher_top1"] == pytest.approx(3 / 4)


def _student_config(data, teacher, **train):
    return {
        "model": {"type": "dual_encoder", "width": 32, "embed_dim": 24,
                  "encoders": {"text": {**TINY_ENCODERS["text"], "pooling": "mean"}},
                  "tokenizer": {"vocab_size": 200}},
        "tasks": {"distill": {"type": "distill", "teacher": teacher}},
        "data": {"train": str(data / "train.jsonl"), "val": str(data / "val.jsonl")},
        "train": {"max_steps": 80, "batch_size": 32, "lr": 3e-3, "warmup_steps": 5, "log_every": 10,
                  "ckpt_every": 80, "progress": False, **train},
    }


def test_a_student_learns_the_teachers_space_and_is_saved_without_it(tmp_path, shapes_data):
    folder = tmp_path / "teacher"
    shutil.copytree(hf_folders.bert(), folder)
    config = _student_config(shapes_data, {"type": "hf", "path": str(folder), "pooling": "mean"})
    trainer = Trainer(load_config(write_config(tmp_path, config)), tmp_path / "run", log=lambda _: None)
    assert not any("teacher" in k for k in trainer.model.state_dict())
    trainer.fit()
    val = read_manifest(shapes_data / "val.jsonl")
    metrics = load(tmp_path / "run").evaluate(val)["distill"]
    # the baseline: one vector for every text, the teacher's mean direction
    teacher = trainer.system.model.tasks["distill"].teacher[0]
    batch = trainer.system.model.tasks["distill"].data.collate_targets(
        [trainer.system.model.tasks["distill"].data.target(r) for r in val])
    t = F.normalize(teacher(batch["batch"]), dim=-1)
    baseline = (t @ F.normalize(t.mean(0), dim=0)).mean().item()
    assert metrics["cosine"] > baseline + 0.5 * (1 - baseline), (metrics, baseline)
    shutil.rmtree(folder)  # serving the student needs no teacher
    embedded = load(tmp_path / "run").embed(texts=["a red circle", "a blue square"])["text"]
    assert embedded.shape == (2, 24)
    torch.testing.assert_close(embedded.norm(dim=-1), torch.ones(2))


def test_a_trained_run_can_be_the_teacher(tmp_path, shapes_data):
    teacher_config = _student_config(shapes_data, {"type": "hf", "path": str(hf_folders.bert())}, max_steps=2)
    Trainer(load_config(write_config(tmp_path, teacher_config, "t.yaml")), tmp_path / "teacher",
            log=lambda _: None).fit()
    config = _student_config(shapes_data, {"run": str(tmp_path / "teacher")}, max_steps=2)
    system = build_system(load_config(write_config(tmp_path, config)), read_manifest(shapes_data / "train.jsonl"))
    task = system.model.tasks["distill"]
    assert task.teacher[0].dim == 24 and task.in_space
    records = read_manifest(shapes_data / "val.jsonl")[:4]
    target = task.data.collate_targets([task.data.target(r) for r in records])
    expected = load(tmp_path / "teacher").embed(texts=[r["text"] for r in records])["text"]
    torch.testing.assert_close(task.teacher[0](target["batch"]), expected)


def test_bad_teachers_are_named(tmp_path, shapes_data):
    for teacher, message in [({"path": "x"}, "expected {type: hf"), ({"type": "gru"}, "pretrained encoder"),
                             ({"type": "hf", "path": str(hf_folders.bert()), "size": 3}, "unknown key 'size'"),
                             ({"run": str(tmp_path / "none")}, "not a run")]:
        config = _student_config(shapes_data, teacher)
        with pytest.raises((ConfigError, Exception), match=message):
            build_system(load_config(write_config(tmp_path, config)), read_manifest(shapes_data / "train.jsonl"))
