"""Distillation from a frozen teacher into the model's encoder (docs/concepts.md#pre-training "knowledge distillation"):
embeddings into the teacher's space (cosine or MSE), or logits (KL) where the teacher has logits."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..models.output import ModelOutput
from ..models.teacher import TARGETS, Teacher
from .base import Task, TaskData, head_scores

LOSSES = ("cosine", "mse")


class DistillationData(TaskData):
    """One modality (`inputs`, default the text); the target is the same record value as the teacher's
    processor prepares it (its own tokenizer or image processor). Scored by how close the student's vectors
    are to the teacher's on held-out records.

    Args:
        inputs: exactly one modality → record field.
        teacher_processor: the teacher's processor (the builder gives it).
    """

    inputs = {"text": "text"}

    def __init__(self, *, inputs: dict[str, str] | None = None, teacher_processor: Any = None):
        super().__init__(inputs=inputs)
        if len(self.inputs) != 1:
            raise ValueError(f"inputs: distillation reads one modality, got {sorted(self.inputs)}")
        (self.modality, self.field), = self.inputs.items()
        self.teacher_processor = teacher_processor

    def usable(self, record: dict[str, Any]) -> bool:
        """Also: the teacher's files are there (a served student's teacher may be gone; evaluation then
        leaves this task out)."""
        available = getattr(self.teacher_processor, "available", None)
        return super().usable(record) and (available is None or available())

    def target(self, record: dict[str, Any]) -> tuple[str, Any]:
        """The input's name (the teacher's cache key) and the teacher's view of it, unaugmented."""
        return str(record[self.field]), self.teacher_processor.prepare(record[self.field], None)

    def collate_targets(self, targets: list[tuple[str, Any]]) -> dict[str, Any]:
        return {"batch": self.teacher_processor.collate([t for _, t in targets]), "keys": [k for k, _ in targets]}

    def metrics(self, predictions: list[dict[str, Any]], records: list[dict[str, Any]]) -> dict[str, float]:
        """Embeddings: the mean cosine of student and teacher vectors, and `teacher_top1`, how often the
        teacher vector nearest to the student's belongs to the same input. Logits: how often the student's
        top class is the teacher's (`agreement`) and the mean KL(teacher ‖ student) at temperature 1."""
        student = torch.stack([p["student"] for p in predictions])
        teacher = torch.stack([p["teacher"] for p in predictions])
        if predictions and predictions[0]["kind"] == "logits":
            kl = F.kl_div(F.log_softmax(student, -1), F.log_softmax(teacher, -1), log_target=True,
                          reduction="batchmean")
            return {"agreement": (student.argmax(-1) == teacher.argmax(-1)).float().mean().item(), "kl": kl.item()}
        s, t = F.normalize(student, dim=-1), F.normalize(teacher, dim=-1)
        values = [str(r.get(self.field)) for r in records]
        nearest = (s @ t.T).argmax(-1).tolist()
        hits = [values[j] == values[i] for i, j in enumerate(nearest)]
        return {"cosine": (s * t).sum(-1).mean().item(), "teacher_top1": sum(hits) / max(1, len(hits))}


class DistillationTask(Task):
    """Match a frozen teacher's vectors (docs/concepts.md#pre-training).

    `target: embedding`: the student's vector is the model's shared-space embedding of the modality when
    `model.embed_dim` equals the teacher's width (so `polymodal.load(RUN).embed(...)` gives vectors in the
    teacher's space), else a linear map of its encoder's pooled vector to that width. `loss: cosine` is
    1 − cos(student, teacher); `loss: mse` the mean squared difference, with the teacher's vector
    L2-normalised when the student's (a shared-space embedding) is.
    `target: logits`: a linear head on the fused vector gives the teacher's classes; the loss is Hinton's
    KL(teacher ‖ student) at `temperature` τ, times τ².

    Args:
        data: its data side.
        teacher: the frozen teacher (the builder makes it from `teacher: {type: hf, path: ...}` or
            `teacher: {run: RUN_FOLDER}`).
        width: D, the model width.
        embed_dim: the model's shared embedding width, or None.
        target: "embedding" or "logits".
        loss: "cosine" or "mse" (embeddings).
        temperature: τ for logits.
        weight: multi-task loss weight.
    """

    data_class = DistillationData
    data: DistillationData

    def __init__(self, data: DistillationData, *, teacher: Teacher, width: int, embed_dim: int | None = None,
                 target: str = "embedding", loss: str = "cosine", temperature: float = 2.0, weight: float = 1.0):
        super().__init__(data, weight=weight)
        if target not in TARGETS:
            raise ValueError(f"target: expected one of {', '.join(TARGETS)}, got {target!r}")
        if loss not in LOSSES:
            raise ValueError(f"loss: expected one of {', '.join(LOSSES)}, got {loss!r}")
        if temperature <= 0:
            raise ValueError(f"temperature: expected a number > 0, got {temperature}")
        self.teacher, self.target, self.loss_type, self.temperature = [teacher], target, loss, temperature
        self.in_space = target == "embedding" and embed_dim == teacher.dim  # the shared space is the teacher's
        self.needs_fusion = target == "logits"
        self.head = None if self.in_space else nn.Linear(width, teacher.dim)

    def _student(self, out: ModelOutput) -> torch.Tensor:
        m = self.data.modality
        if self.target == "logits":
            return head_scores(self.head, out)
        if self.in_space:
            return out.embeddings[m]
        return self.head(out.modalities[m].pooled)

    def _loss(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        if self.target == "logits":
            tau = self.temperature
            return F.kl_div(F.log_softmax(student / tau, -1), F.log_softmax(teacher / tau, -1), log_target=True,
                            reduction="batchmean") * tau**2
        if self.loss_type == "cosine":
            return (1 - F.cosine_similarity(student, teacher, dim=-1)).mean()
        return F.mse_loss(student, F.normalize(teacher, dim=-1) if self.in_space else teacher)

    def frozen_target(self, target: dict[str, Any]) -> dict[str, Any]:
        return {"vectors": self.teacher[0](target["batch"], target["keys"])}

    def forward(self, out: ModelOutput, target: dict[str, Any]) -> dict[str, torch.Tensor]:
        student = self._student(out).float()
        teacher = target["vectors"] if "vectors" in target else self.frozen_target(target)["vectors"]
        return {"loss": self._loss(student, teacher)}

    def predict_batch(self, model: nn.Module, inputs: dict[str, dict[str, torch.Tensor]],
                      target: dict[str, Any]) -> list[dict[str, Any]]:
        """The student's and the teacher's vector per example (the teacher reads the collated target)."""
        student = self._student(model.encode(inputs, fuse=self.needs_fusion)).float()
        teacher = self.teacher[0](target["batch"], target["keys"])
        return [{"student": s.cpu(), "teacher": t.cpu(), "kind": self.target} for s, t in zip(student, teacher)]
