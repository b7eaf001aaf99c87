"""Contrastive image–text learning and retrieval (seed §3.1 "contrastive learning")."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..evaluation.metrics import retrieval_recall
from ..models.output import ModelOutput
from ..training.distributed import gather_with_grad
from .base import Task, TaskData


def info_nce(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE: row i of `a` and row i of `b` are the positive pair.

    Args:
        a: (B, E) L2-normalised embeddings of one modality.
        b: (B, E) of the other.
        logit_scale: scalar, 1 / temperature.
    """
    logits = logit_scale * a @ b.T  # (B, B)
    labels = torch.arange(a.shape[0], device=a.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


class ContrastiveData(TaskData):
    """Two paired modalities (`inputs`: image–text by default; {video: video, text: text} or
    {audio: audio, text: text} give video–text and audio–text retrieval), scored by retrieval recall.
    A hit is a retrieved item whose caption (`caption_field`) equals the query's (synthetic captions repeat).

    Args:
        inputs: exactly two modalities → record fields.
        caption_field: the record field that says which items are equivalent.
    """

    inputs = {"image": "image", "text": "text"}

    def __init__(self, *, inputs: dict[str, str] | None = None, caption_field: str = "text"):
        super().__init__(inputs=inputs)
        if len(self.inputs) != 2:
            raise ValueError(f"inputs: contrastive learning pairs exactly two modalities, got {sorted(self.inputs)}")
        self.first, self.second = self.inputs  # e.g. image, text: metrics text_to_image and image_to_text
        self.caption_field = caption_field

    def metrics(self, predictions: list[dict[str, torch.Tensor]], records: list[dict[str, Any]]) -> dict[str, float]:
        a = torch.stack([p[self.first] for p in predictions])
        b = torch.stack([p[self.second] for p in predictions])
        return retrieval_recall(a, b, [str(r.get(self.caption_field)) for r in records], ks=(1, 5, 10),
                                names=(self.first, self.second))


class ContrastiveTask(Task):
    """Pull the two paired modalities together, push the rest of the batch apart.

    Under data parallelism each process gathers the embeddings of all processes (with gradient), so
    negatives come from the whole global batch and the loss equals a single-process run's.

    Args:
        data: its data side (which two modalities).
        weight: multi-task loss weight.
    """

    data_class = ContrastiveData
    data: ContrastiveData
    fused = False
    needs = ("embeddings",)

    def forward(self, out: ModelOutput, target: torch.Tensor) -> dict[str, torch.Tensor]:
        a = gather_with_grad(out.embeddings[self.data.first].float())
        b = gather_with_grad(out.embeddings[self.data.second].float())
        return {"loss": info_nce(a, b, out.logit_scale.float())}

    def predict_output(self, out: ModelOutput) -> list[dict[str, torch.Tensor]]:
        first, second = self.data.first, self.data.second
        a, b = out.embeddings[first].float(), out.embeddings[second].float()
        return [{first: x, second: y} for x, y in zip(a, b)]
