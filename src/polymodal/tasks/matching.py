"""Matching (docs/concepts.md#multi-task): do these two inputs belong together? E.g. a clip's pictures and a sound
track."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..models.output import ModelOutput
from .base import Task, TaskData, head_scores


class MatchingData(TaskData):
    """Pairs of the two `inputs` modalities (default: video and audio), half of them mismatched.

    Half of the examples are the record's own pair; in the other half the second modality comes from
    another record (a random one in training; in evaluation, odd items take the record half the set
    away, so the held-out pairs are fixed and balanced). Records whose second field is the same file
    or value are not used as mismatches. Target 1: the pair belongs together.
    For video–audio matching, use a video encoder that does not fuse the clip's own sound track (no
    `audio` in its config): that track would give the answer away.

    Args:
        inputs: exactly two modalities → record fields; the second is the one swapped.
    """

    inputs = {"video": "video", "audio": "audio"}

    def __init__(self, *, inputs: dict[str, str] | None = None):
        super().__init__(inputs=inputs)
        if len(self.inputs) != 2:
            raise ValueError(f"inputs: matching pairs exactly two modalities, got {sorted(self.inputs)}")
        self.swapped = list(self.inputs.values())[1]

    def _partner(self, records: list[dict[str, Any]], index: int, generator: torch.Generator | None) -> int | None:
        """The record lending its second field, or None for the true pair."""
        n = len(records)
        if n < 2:
            return None
        if generator is None:
            if index % 2 == 0:
                return None
            candidates = [(index + n // 2 + k) % n for k in range(n)]
        else:
            if torch.rand((), generator=generator) < 0.5:
                return None
            start = int(torch.randint(0, n, (), generator=generator))
            candidates = [(start + k) % n for k in range(n)]
        own = records[index][self.swapped]
        return next((c for c in candidates if records[c][self.swapped] != own), None)

    def example(self, records: list[dict[str, Any]], index: int,
                generator: torch.Generator | None) -> tuple[dict[str, Any], int]:
        partner = self._partner(records, index, generator)
        if partner is None:
            return records[index], 1
        return {**records[index], self.swapped: records[partner][self.swapped]}, 0

    def metrics(self, predictions: list[float], records: list[dict[str, Any]]) -> dict[str, float]:
        truth = [self._partner(records, i, None) is None for i in range(len(records))]
        correct = [(p >= 0.5) == t for p, t in zip(predictions, truth)]
        return {"accuracy": sum(correct) / max(1, len(correct))}


class MatchingTask(Task):
    """Do the two inputs belong together? A head on the pooled vector gives the match logit.

    Args:
        data: its data side (which two modalities, the mismatched pairs).
        width: D, the pooled vector width.
        hidden: MLP hidden width.
        weight: multi-task loss weight.
    """

    data_class = MatchingData

    def __init__(self, data: MatchingData, *, width: int, hidden: int = 128, weight: float = 1.0):
        super().__init__(data, weight=weight)
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def forward(self, out: ModelOutput, target: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = head_scores(self.head, out).squeeze(-1)  # (B,)
        return {"loss": F.binary_cross_entropy_with_logits(logits.float(), target.float()), "logits": logits}

    def predict_output(self, out: ModelOutput) -> list[float]:
        """The probability that each pair belongs together."""
        return torch.sigmoid(head_scores(self.head, out).squeeze(-1).float()).tolist()
