"""Late fusion (docs/concepts.md#fusion, #joint-modelling dual encoder): encode each modality apart, combine the
pooled vectors at the top.

By default the pooled vectors are the encoders' own. With `pooling: cls | positional` each modality first
runs a stream of `depth` unimodal transformer layers of its own (what the multi-stream fusions have, minus
every interaction) and is read out as they read theirs: the control that isolates what interaction adds.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers.transformer import TransformerBlock
from ..modalities.base import EncoderOutput
from .base import FusionOutput
from .streams import POOLING, StreamReadout, StreamStarts, streams_output

COMBINE = ("concat", "mean", "weighted", "product", "scores")


class LateFusion(nn.Module):
    """Combine one pooled vector per modality into one (B, D) vector.

    Args:
        modalities: the modality names, combined in sorted order.
        width: D, the width of each pooled vector and of the result.
        combine: `concat` (concatenate, then a Linear back to D), `mean`, `weighted` (learned softmax
            weights per modality), `product` (element-wise product, for two modalities or more), or
            `scores`: score-level fusion, where each task head scores every modality's vector on its own
            and the scores are averaged over the modalities an example has (`pooled` is their mean).
        pooling: each modality's vector. `encoder`: its encoder's pooled output. `cls` / `positional`:
            read out (`streams.StreamReadout`) from a stream of `depth` unimodal layers with its own CLS.
            None: `encoder` with depth 0, else `cls`.
        depth: the unimodal layers per stream.
        num_heads: attention heads in each stream layer (must divide the width).
        mlp_ratio: the MLP's hidden width in each stream layer, as a multiple of the width.
        dropout: dropout on attention weights and MLP outputs in each stream layer.
        max_length, readout_dim: the positional readout's.
    """

    def __init__(self, modalities: list[str], width: int, combine: str = "concat", *, pooling: str | None = None,
                 depth: int = 0, num_heads: int = 4, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 max_length: int = 128, readout_dim: int = 16):
        super().__init__()
        if combine not in COMBINE:
            raise ValueError(f"combine: expected one of {', '.join(COMBINE)}, got {combine!r}")
        if pooling is None:
            pooling = "encoder" if depth == 0 else "cls"
        if pooling == "encoder" and depth:
            raise ValueError(f"depth: the encoders' own pooled vectors (pooling 'encoder') take no stream layers, "
                             f"got depth={depth}; choose pooling 'cls' or 'positional'")
        if pooling not in ("encoder", *POOLING):
            raise ValueError(f"pooling: expected one of encoder, {', '.join(POOLING)}, got {pooling!r}")
        if pooling == "cls" and depth < 1:
            raise ValueError("pooling 'cls' needs depth >= 1: a CLS token with no layers after it reads nothing")
        self.modalities = sorted(modalities)
        self.combine, self.pooling = combine, pooling
        self.gives_tokens = pooling != "encoder"  # the streams' tokens; else only a pooled vector
        if combine == "concat":
            self.proj = nn.Linear(width * len(self.modalities), width)
        if combine == "weighted":
            self.logits = nn.Parameter(torch.zeros(len(self.modalities)))
        if pooling != "encoder":
            self.starts = StreamStarts(self.modalities, width)
            self.blocks = nn.ModuleList(
                nn.ModuleDict({m: TransformerBlock(width, num_heads, mlp_ratio=mlp_ratio, dropout=dropout)
                               for m in self.modalities}) for _ in range(depth))
            self.readout = StreamReadout(self.modalities, width, pooling=pooling, max_length=max_length,
                                         readout_dim=readout_dim, fuse=False)

    def forward(self, outputs: dict[str, EncoderOutput]) -> FusionOutput:
        """Args: each present modality's encoder output. Returns: the combined pooled vectors (B, D)."""
        if self.pooling == "encoder":
            vectors = {name: out.pooled for name, out in outputs.items()}
            fused = FusionOutput(pooled=self.combine_pooled(vectors))
        else:
            tokens, masks = self.starts(outputs)  # {m: (B, 1 + N_m, D)}, CLS first
            for layer in self.blocks:  # no stream ever sees another
                tokens = {m: layer[m](x, masks[m]) for m, x in tokens.items()}
            normed = {m: self.readout.norm(x) for m, x in tokens.items()}
            vectors = self.readout.vectors(normed, masks)
            fused = streams_output(self.combine_pooled(vectors), normed, masks, vectors)
        if self.combine == "scores":  # a modality an example lacks (its placeholder) does not vote
            fused.scored = vectors
            fused.score_weights = {m: out.presence() for m, out in outputs.items()}
        return fused

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
        if self.combine in ("mean", "scores"):
            return stacked.mean(0)
        if self.combine == "product":
            return stacked.prod(0)
        logits = self.logits[[self.modalities.index(n) for n in present]]
        return (logits.softmax(0)[:, None, None] * stacked).sum(0)
