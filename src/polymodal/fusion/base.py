"""What every fusion module returns (seed §2.2): one pooled vector, and the joint tokens where it builds them.

A fusion is an `nn.Module` built from `(modalities, width, **its options)` whose `forward` takes
`dict[str, EncoderOutput]` (the modalities present in the batch) and returns a `FusionOutput`.
Register it in `fusion/__init__.py`; the fusion contract tests pick it up from there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
