"""A classifier over a vocabulary learnt from training records: shared by VQA and classification."""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..models.output import ModelOutput
from .base import Task, TaskData, head_scores


class VocabularyData(TaskData):
    """Targets are indices into `vocab`, the values of `target_field` seen in training.

    Args:
        vocab: the classes, in index order (learnt from the training records by `vocab_from`).
        inputs: modality → record field (see `TaskData`).
    """

    def __init__(self, *, vocab: list[str], inputs: dict[str, str] | None = None):
        super().__init__(inputs=inputs)
        if not vocab:
            raise ValueError("vocab: expected at least one class")
        self.vocab = list(vocab)
        self.index = {v: i for i, v in enumerate(self.vocab)}

    @classmethod
    def vocab_from(cls, records: list[dict[str, Any]], options: dict[str, Any]) -> list[str]:
        counts = Counter(str(r[cls.target_field]) for r in records if cls.target_field in r)
        return sorted(counts, key=lambda v: (-counts[v], v))

    def target(self, record: dict[str, Any]) -> int:
        # -100: a value never seen in training (only possible at evaluation); ignored by the loss
        return self.index.get(str(record[self.target_field]), -100)


class VocabularyTask(Task):
    """Predict one of the data side's `vocab` from the model's pooled vector with an MLP head.

    Args:
        data: its data side (a `VocabularyData`: the classes).
        width: D, the pooled vector width.
        hidden: MLP hidden width (0: a single Linear).
        dropout: dropout before the last layer.
        weight: multi-task loss weight.
    """

    data_class = VocabularyData
    data: VocabularyData

    def __init__(self, data: VocabularyData, *, width: int, hidden: int = 256, dropout: float = 0.0,
                 weight: float = 1.0):
        super().__init__(data, weight=weight)
        n = len(data.vocab)
        if hidden:
            self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout),
                                      nn.Linear(hidden, n))
        else:
            self.head = nn.Sequential(nn.LayerNorm(width), nn.Dropout(dropout), nn.Linear(width, n))

    def forward(self, out: ModelOutput, target: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = head_scores(self.head, out)  # (B, V)
        return {"loss": F.cross_entropy(logits.float(), target, ignore_index=-100), "logits": logits}

    def predict_output(self, out: ModelOutput) -> list[str]:
        return [self.data.vocab[i] for i in head_scores(self.head, out).argmax(-1).tolist()]

    def scores(self, out: ModelOutput) -> torch.Tensor:
        """(B, V) class probabilities."""
        return head_scores(self.head, out).float().softmax(-1)
