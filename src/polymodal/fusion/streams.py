"""Pieces shared by the multi-stream fusions: a learned CLS per stream, the per-stream readout (CLS, or
CLS plus every position through its own weights), and the fused pooled vector over the streams."""

from __future__ import annotations

import torch
from torch import nn

from ..layers.readout import place_by_position
from ..modalities.base import EncoderOutput
from .base import FusionOutput

POOLING = ("cls", "positional")


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
    """One vector per stream, and (with `fuse`) pooled = Linear(concat of the stream vectors, in sorted
    order), a missing stream giving zeros.

    Args:
        modalities: the stream names.
        width: D.
        pooling: a stream's vector. `cls`: its normalised CLS output. `positional`: its CLS output together
            with every real token through its position's own weights (each token projected to
            `readout_dim`, placed by its position in the stream, flattened, mapped to D and normalised),
            so a head can tell *where* in the stream something is.
        max_length: the longest stream the positional readout places (its CLS not counted).
        readout_dim: per-token width of the positional readout.
        fuse: also build the Linear that fuses the stream vectors into one pooled vector.
    """

    def __init__(self, modalities: list[str], width: int, *, pooling: str = "cls", max_length: int = 128,
                 readout_dim: int = 16, fuse: bool = True):
        super().__init__()
        if pooling not in POOLING:
            raise ValueError(f"pooling: expected one of {', '.join(POOLING)}, got {pooling!r}")
        self.modalities, self.pooling, self.max_length = sorted(modalities), pooling, max_length
        self.norm = nn.LayerNorm(width)
        if pooling == "positional":
            self.token = nn.ModuleDict({m: nn.Linear(width, readout_dim) for m in self.modalities})
            self.summary = nn.ModuleDict({m: nn.Sequential(nn.Linear(width + max_length * readout_dim, width),
                                                           nn.LayerNorm(width)) for m in self.modalities})
        if fuse:
            self.proj = nn.Linear(width * len(self.modalities), width)

    def vectors(self, normed: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Normalised streams {m: (B, 1 + N_m, D)}, CLS first → one vector (B, D) per stream."""
        if self.pooling == "cls":
            return {m: x[:, 0] for m, x in normed.items()}
        vectors = {}
        for m, x in normed.items():
            try:
                placed = place_by_position(self.token[m](x[:, 1:]), masks[m][:, 1:], self.max_length)
            except ValueError as e:
                raise ValueError(f"stream {m!r}: {e} (set the fusion's max_length)") from None
            vectors[m] = self.summary[m](torch.cat([x[:, 0], placed.flatten(1)], dim=-1))
        return vectors

    def forward(self, tokens: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> FusionOutput:
        """tokens {m: (B, 1 + N_m, D)} → the fused output: pooled (B, D), every stream's tokens concatenated."""
        normed = {m: self.norm(t) for m, t in tokens.items()}
        vectors = self.vectors(normed, masks)
        reference = next(iter(vectors.values()))
        heads = [vectors[m] if m in vectors else torch.zeros_like(reference) for m in self.modalities]
        return streams_output(self.proj(torch.cat(heads, dim=-1)), normed, masks, vectors)


def streams_output(pooled: torch.Tensor, normed: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
                   vectors: dict[str, torch.Tensor]) -> FusionOutput:
    """The fused pooled vector, with every stream (and its vector) kept and their tokens concatenated."""
    order = sorted(normed)
    streams = {m: EncoderOutput(tokens=normed[m], mask=masks[m], pooled=vectors[m]) for m in order}
    return FusionOutput(pooled=pooled, tokens=torch.cat([normed[m] for m in order], dim=1),
                        mask=torch.cat([masks[m] for m in order], dim=1), streams=streams)


def others(tokens: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
           name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Every stream but `name`, concatenated in sorted order: context (B, M, D) and its mask (B, M)."""
    rest = [m for m in sorted(tokens) if m != name]
    return torch.cat([tokens[m] for m in rest], dim=1), torch.cat([masks[m] for m in rest], dim=1)
