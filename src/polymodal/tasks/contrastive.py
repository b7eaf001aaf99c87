"""Contrastive image–text learning and retrieval (docs/concepts.md#pre-training "contrastive learning"): CLIP's
InfoNCE or
SigLIP's pairwise sigmoid loss."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..metrics import retrieval_recall
from ..models.output import ModelOutput
from ..distributed import gather_with_grad
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


def siglip(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """SigLIP's sigmoid loss (Zhai et al. 2023): every pair (i, j) is its own binary problem, positive on
    the diagonal, negative off it; the sum over all B² pairs is divided by B (the paper's normalisation).

    Args:
        a: (B, E) L2-normalised embeddings of one modality.
        b: (B, E) of the other; row i of `a` and row i of `b` are the positive pair.
        logit_scale: scalar t, multiplying the cosine similarities.
        bias: scalar b added to every logit (learnt; -10 at first, so the many negatives start out right).
    """
    logits = logit_scale * a @ b.T + bias  # (B, B)
    signs = 2 * torch.eye(a.shape[0], device=a.device, dtype=logits.dtype) - 1  # +1 on the diagonal, -1 off it
    return -F.logsigmoid(signs * logits).sum() / a.shape[0]


LOSSES = ("infonce", "siglip")


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

    Both losses scale the similarities by the model's learnt `logit_scale` (its `init_temperature`,
    0.07 by default, i.e. a scale of 14.3 at first; SigLIP's paper starts at t = 10: set
    `model.init_temperature: 0.1`). SigLIP's bias is this task's own parameter, `bias`.

    Args:
        data: its data side (which two modalities).
        loss: "infonce" (CLIP's symmetric softmax loss) or "siglip" (pairwise sigmoid loss).
        bias_init: the SigLIP bias to start from (-10, the paper's); only with `loss: siglip`.
        weight: multi-task loss weight.
    """

    data_class = ContrastiveData
    data: ContrastiveData
    needs_fusion = False
    needs = ("embeddings",)

    def __init__(self, data: ContrastiveData, *, loss: str = "infonce", bias_init: float | None = None,
                 weight: float = 1.0):
        super().__init__(data, weight=weight)
        if loss not in LOSSES:
            raise ValueError(f"loss: expected one of {', '.join(LOSSES)}, got {loss!r}")
        if bias_init is not None and loss != "siglip":
            raise ValueError(f"bias_init: only the siglip loss has a bias, but loss is {loss!r}")
        self.loss = loss
        if loss == "siglip":  # InfoNCE runs keep the state dict they always had
            self.bias = nn.Parameter(torch.tensor(-10.0 if bias_init is None else float(bias_init)))

    def forward(self, out: ModelOutput, target: torch.Tensor) -> dict[str, torch.Tensor]:
        a = gather_with_grad(out.embeddings[self.data.first].float())
        b = gather_with_grad(out.embeddings[self.data.second].float())
        if self.loss == "siglip":
            return {"loss": siglip(a, b, out.logit_scale.float(), self.bias.float())}
        return {"loss": info_nce(a, b, out.logit_scale.float())}

    def predict_output(self, out: ModelOutput) -> list[dict[str, torch.Tensor]]:
        first, second = self.data.first, self.data.second
        a, b = out.embeddings[first].float(), out.embeddings[second].float()
        return [{first: x, second: y} for x, y in zip(a, b)]
