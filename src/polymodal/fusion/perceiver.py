"""Perceiver latent fusion (docs/concepts.md#joint-modelling modality-agnostic): a learned latent array cross-attends
to every
modality's tokens (marked by modality) and self-attends; any set of modalities in, one trunk."""

from __future__ import annotations

import torch
from torch import nn

from ..layers.attention import keeping_attention_weights
from ..layers.markers import ModalityMarkers
from ..layers.transformer import TransformerBlock
from ..modalities.base import EncoderOutput
from .base import FusionOutput
from .early import concat_with_markers, split_marked


class PerceiverFusion(nn.Module):
    """latents ← latents + CrossAttn(LN(latents), [m_1; X^(1); ...]), then self-attention; `depth` times.

    Args:
        modalities: the modality names.
        width: D.
        num_latents: the latent array's length.
        depth: cross-attention + self-attention rounds.
        self_layers: self-attention blocks per round.
        num_heads: attention heads in each block (must divide the width).
        mlp_ratio: the MLP's hidden width in each block, as a multiple of the width.
        dropout: dropout on attention weights and MLP outputs in each block.
    """

    gives_tokens = True  # the joint token sequence, besides the pooled vector

    def __init__(self, modalities: list[str], width: int, *, num_latents: int = 16, depth: int = 2,
                 self_layers: int = 1, num_heads: int = 4, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(1, num_latents, width) * 0.02)
        self.markers = ModalityMarkers(sorted(modalities), width)
        self.read = nn.ModuleList(TransformerBlock(width, num_heads, mlp_ratio=mlp_ratio, dropout=dropout,
                                                   context_dim=width) for _ in range(depth))
        self.think = nn.ModuleList(
            nn.ModuleList(TransformerBlock(width, num_heads, mlp_ratio=mlp_ratio, dropout=dropout)
                          for _ in range(self_layers)) for _ in range(depth))
        self.norm = nn.LayerNorm(width)

    def forward(self, outputs: dict[str, EncoderOutput]) -> FusionOutput:
        context, context_mask = concat_with_markers(self.markers, outputs)  # (B, M, D), (B, M)
        x = self.latents.expand(context.shape[0], -1, -1)  # (B, L, D)
        for read, think in zip(self.read, self.think):
            x = read(x, context=context, context_mask=context_mask)
            for block in think:
                x = block(x)
        x = self.norm(x)
        return FusionOutput(pooled=x.mean(dim=1), tokens=x, mask=x.new_ones(x.shape[:2], dtype=torch.bool))

    def token_relevance(self, outputs: dict[str, EncoderOutput]) -> dict[str, torch.Tensor]:
        """How much the latents drew from each input token in the last read (averaged over latents, heads)."""
        with keeping_attention_weights(self):
            self(outputs)
        return split_marked(self.read[-1].cross.last_weights.mean(dim=(1, 2)), outputs)  # (B, M) → per modality
