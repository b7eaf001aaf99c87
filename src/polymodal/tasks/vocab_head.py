"""A classifier over a vocabulary learnt from training records: shared by VQA and classification."""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..models.output import ModelOutput
from .base import Task, head_scores


class VocabularyTask(Task):
    """Predict one of `vocab` from the model's pooled vector with an MLP head.

    Args:
        width: D, the pooled vector width.
        vocab: the classes, in index order (learnt from the training records by `vocab_from`).
        hidden: MLP hidden width (0: a single Linear).
        dropout: dropout before the last layer.
        weight: multi-task loss weight.
        inputs: modality → record field (see `Task`).
    """

    def __init__(self, *, width: int, vocab: list[str], hidden: int = 256, dropout: float = 0.0,
                 weight: float = 1.0, inputs: dict[str, str] | None = None):
        super().__init__(weight=weight, inputs=inputs)
        self.vocab = list(vocab)
        self.index = {v: i for i, v in enumerate(self.vocab)}
        if hidden:
            self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout),
                                      nn.Linear(hidden, len(self.vocab)))
        else:
            self.head = nn.Sequential(nn.LayerNorm(width), nn.Dropout(dropout), nn.Linear(width, len(self.vocab)))

    @classmethod
    def vocab_from(cls, records: list[dict[str, Any]], config: dict[str, Any]) -> list[str]:
        counts = Counter(str(r[cls.target_field]) for r in records if cls.target_field in r)
        return sorted(counts, key=lambda v: (-counts[v], v))

    def target(self, record: dict[str, Any]) -> int:
        # -100: a value never seen in training (only possible at evaluation); ignored by the loss
        return self.index.get(str(record[self.target_field]), -100)

    def forward(self, out: ModelOutput, target: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = head_scores(self.head, out)  # (B, V)
        return {"loss": F.cross_entropy(logits.float(), target, ignore_index=-100), "logits": logits}

    def predict_output(self, out: ModelOutput) -> list[str]:
        return [self.vocab[i] for i in head_scores(self.head, out).argmax(-1).tolist()]

    def scores(self, out: ModelOutput) -> torch.Tensor:
        """(B, V) class probabilities."""
        return head_scores(self.head, out).float().softmax(-1)
