"""Contrastive image–text learning and retrieval (seed §3.1 "contrastive learning")."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..evaluation.metrics import retrieval_recall
from ..models.output import ModelOutput
from ..training.distributed import gather_with_grad
from .base import Task


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


class ContrastiveTask(Task):
    """Pull paired image and text together, push the rest of the batch apart.

    Under data parallelism each process gathers the embeddings of all processes (with gradient), so
    negatives come from the whole global batch and the loss equals a single-process run's.
    Retrieval metrics count a hit when the retrieved item's caption equals the query's (captions repeat).
    """

    inputs = {"image": "image", "text": "text"}

    def forward(self, out: ModelOutput, target: torch.Tensor) -> dict[str, torch.Tensor]:
        image = gather_with_grad(out.embeddings["image"].float())
        text = gather_with_grad(out.embeddings["text"].float())
        return {"loss": info_nce(image, text, out.logit_scale.float())}

    def predict(self, out: ModelOutput) -> list[dict[str, torch.Tensor]]:
        image, text = out.embeddings["image"].float(), out.embeddings["text"].float()
        return [{"image": i, "text": t} for i, t in zip(image, text)]

    def metrics(self, predictions: list[dict[str, torch.Tensor]], records: list[dict[str, Any]]) -> dict[str, float]:
        image = torch.stack([p["image"] for p in predictions])
        text = torch.stack([p["text"] for p in predictions])
        return retrieval_recall(image, text, [str(r["text"]) for r in records], ks=(1, 5, 10))
