"""Late fusion (seed §2.2, §2.3 dual encoder): encode each modality apart, combine the pooled vectors at the top."""

from __future__ import annotations

import torch
from torch import nn

from ..modalities.base import EncoderOutput
from .base import FusionOutput

COMBINE = ("concat", "mean", "weighted", "product")


class LateFusion(nn.Module):
    """Combine one pooled vector per modality into one (B, D) vector.

    Args:
        modalities: the modality names, combined in sorted order.
        width: D, the width of each pooled vector and of the result.
        combine: `concat` (concatenate, then a Linear back to D), `mean`, `weighted` (learned softmax
            weights per modality) or `product` (element-wise product, for two modalities or more).
    """

    def __init__(self, modalities: list[str], width: int, combine: str = "concat"):
        super().__init__()
        if combine not in COMBINE:
            raise ValueError(f"combine: expected one of {', '.join(COMBINE)}, got {combine!r}")
        self.modalities = sorted(modalities)
        self.combine = combine
        if combine == "concat":
            self.proj = nn.Linear(width * len(self.modalities), width)
        if combine == "weighted":
            self.logits = nn.Parameter(torch.zeros(len(self.modalities)))

    def forward(self, outputs: dict[str, EncoderOutput]) -> FusionOutput:
        """Args: each present modality's encoder output. Returns: the combined pooled vectors (B, D)."""
        return FusionOutput(pooled=self.combine_pooled({name: out.pooled for name, out in outputs.items()}))

    def combine_pooled(self, pooled: dict[str, torch.Tensor]) -> torch.Tensor:
        """Args: pooled (B, D) per modality; a subset of the modalities is allowed. Returns: (B, D).

        A missing modality contributes zeros to `concat` and is left out of `mean`, `weighted` and `product`.
        """
        present = [name for name in self.modalities if name in pooled]
        if not present:
            raise ValueError(f"late fusion needs at least one of {self.modalities}")
        if self.combine == "concat":
            reference = pooled[present[0]]
            vectors = [pooled[n] if n in pooled else torch.zeros_like(reference) for n in self.modalities]
            return self.proj(torch.cat(vectors, dim=-1))
        stacked = torch.stack([pooled[n] for n in present], dim=0)  # (M', B, D)
        if self.combine == "mean":
            return stacked.mean(0)
        if self.combine == "product":
            return stacked.prod(0)
        logits = self.logits[[self.modalities.index(n) for n in present]]
        return (logits.softmax(0)[:, None, None] * stacked).sum(0)
