"""Pieces shared by the multi-stream fusions: a learned CLS per stream, and the pooled readout over streams."""

from __future__ import annotations

import torch
from torch import nn

from ..modalities.base import EncoderOutput
from .base import FusionOutput


class StreamStarts(nn.Module):
    """Prepends a learned CLS token to each modality's stream, so each stream has its own summary.

    Args:
        modalities: the stream names.
        width: D.
    """

    def __init__(self, modalities: list[str], width: int):
        super().__init__()
        self.cls = nn.ParameterDict({m: nn.Parameter(torch.randn(1, 1, width) * 0.02) for m in sorted(modalities)})

    def forward(self, outputs: dict[str, EncoderOutput]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Returns: tokens {m: (B, 1 + N_m, D)} and masks {m: (B, 1 + N_m)}, CLS first."""
        tokens, masks = {}, {}
        for name in sorted(outputs):
            out = outputs[name]
            batch = out.tokens.shape[0]
            tokens[name] = torch.cat([self.cls[name].expand(batch, -1, -1), out.tokens], dim=1)
            masks[name] = torch.cat([out.mask.new_ones(batch, 1), out.mask], dim=1)
        return tokens, masks


class StreamReadout(nn.Module):
    """pooled = Linear(concat of every stream's CLS output, in sorted order); a missing stream gives zeros.

    Args:
        modalities: the stream names.
        width: D.
    """

    def __init__(self, modalities: list[str], width: int):
        super().__init__()
        self.modalities = sorted(modalities)
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width * len(self.modalities), width)

    def forward(self, tokens: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> FusionOutput:
        """tokens {m: (B, 1 + N_m, D)} → the fused output: pooled (B, D), every stream's tokens concatenated."""
        normed = {m: self.norm(t) for m, t in tokens.items()}
        reference = next(iter(normed.values()))[:, 0]
        heads = [normed[m][:, 0] if m in normed else torch.zeros_like(reference) for m in self.modalities]
        order = sorted(normed)
        streams = {m: EncoderOutput(tokens=normed[m], mask=masks[m], pooled=normed[m][:, 0]) for m in order}
        return FusionOutput(pooled=self.proj(torch.cat(heads, dim=-1)),
                            tokens=torch.cat([normed[m] for m in order], dim=1),
                            mask=torch.cat([masks[m] for m in order], dim=1), streams=streams)


def others(tokens: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
           name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Every stream but `name`, concatenated in sorted order: context (B, M, D) and its mask (B, M)."""
    rest = [m for m in sorted(tokens) if m != name]
    return torch.cat([tokens[m] for m in rest], dim=1), torch.cat([masks[m] for m in rest], dim=1)
