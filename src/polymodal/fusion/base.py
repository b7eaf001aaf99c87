"""What every fusion module returns (docs/concepts.md#fusion): one pooled vector, and the joint tokens where it builds
them.

A fusion is an `nn.Module` built from `(modalities, width, **its options)` whose `forward` takes
`dict[str, EncoderOutput]` (the modalities present in the batch) and returns a `FusionOutput`; it says
whether that output has a token sequence (`gives_tokens`). Register it in `fusion/__init__.py`; the fusion
contract tests check it against `Fusion` (and `ExplainsTokens` where it has attention to show).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch

from ..modalities.base import EncoderOutput


@dataclass
class FusionOutput:
    """A fusion's view of a batch.

    Attributes:
        pooled: (B, D) one fused vector per example: what classification and VQA heads read.
        tokens: (B, N, D) the fused token sequence, for fusions that build one (None for late fusion).
        mask: (B, N) bool, True for real tokens of `tokens`.
        streams: per-modality token streams after their interaction, for multi-stream fusions.
        scored: score-level fusion: each modality's vector (B, D), each scored by the task head on its own
            and the scores averaged over the modalities an example has (`score_weights`, (B,) each).
    """

    pooled: torch.Tensor
    tokens: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    streams: dict[str, EncoderOutput] = field(default_factory=dict)
    scored: dict[str, torch.Tensor] = field(default_factory=dict)
    score_weights: dict[str, torch.Tensor] = field(default_factory=dict)


@runtime_checkable
class Fusion(Protocol):
    """What the backbone and the builder need of a fusion module."""

    gives_tokens: bool  # False: only a pooled vector (nothing for a decoder to attend to)

    def __call__(self, outputs: dict[str, EncoderOutput]) -> FusionOutput: ...


@runtime_checkable
class ExplainsTokens(Protocol):
    """A fusion whose attention says how much each input token mattered to the pooled vector."""

    def token_relevance(self, outputs: dict[str, EncoderOutput]) -> dict[str, torch.Tensor]:
        """Modality → (B, N) relevance of each of its tokens (rows sum to the modality's share)."""
        ...
