"""Gated cross-attention into one chosen stream (Flamingo; Llama 3.2 Vision puts one every 4 layers).

The `target` stream (usually text) runs its own transformer; before every `every`-th layer a gated
cross-attention layer lets it read the other modalities' tokens: x ← x + tanh(a) · CrossAttn(LN(x), ctx),
x ← x + tanh(b) · MLP(LN(x)). The gates a, b start at 0, so the stream starts as its unimodal self and
learns how much of the other modalities to let in.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers.attention import MultiHeadAttention, keeping_attention_weights
from ..layers.markers import ModalityMarkers
from ..layers.transformer import TransformerBlock
from ..modalities.base import EncoderOutput
from .base import FusionOutput
from .early import split_marked


class GatedCrossAttention(nn.Module):
    """x + tanh(attn_gate) · CrossAttn(LN(x), context), then x + tanh(mlp_gate) · MLP(LN(x)); gates start at 0."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.attend = MultiHeadAttention(width, num_heads, context_dim=width, dropout=dropout)
        self.attn_gate = nn.Parameter(torch.zeros(()))
        self.mlp_norm = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width), nn.Dropout(dropout))
        self.mlp_gate = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn_gate.tanh() * self.attend(self.norm(x), context, context_mask=context_mask)
        return x + self.mlp_gate.tanh() * self.mlp(self.mlp_norm(x))


class GatedCrossAttentionFusion(nn.Module):
    """The `target` stream's transformer with a gated cross-attention layer before every `every`-th layer.

    Args:
        modalities: the modality names; `target` among them.
        width: D.
        target: the stream that reads the others (its CLS output is the pooled vector).
        depth: the target stream's transformer layers.
        every: a gated cross-attention layer before layers 1, 1 + every, 1 + 2·every, ...
        num_heads: attention heads in each layer (must divide the width).
        mlp_ratio: the MLP's hidden width in each layer, as a multiple of the width.
        dropout: dropout on attention weights and MLP outputs in each layer.
    """

    gives_tokens = True  # the joint token sequence, besides the pooled vector

    def __init__(self, modalities: list[str], width: int, *, target: str = "text", depth: int = 2, every: int = 1,
                 num_heads: int = 4, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        if target not in modalities:
            raise ValueError(f"target: expected one of the modalities {sorted(modalities)}, got {target!r}")
        if every < 1:
            raise ValueError(f"every: expected a positive number of layers, got {every!r}")
        self.target, self.every = target, every
        self.cls = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        sources = sorted(m for m in modalities if m != target)
        self.markers = ModalityMarkers(sources, width) if sources else None  # which modality a context token is
        self.blocks = nn.ModuleList(TransformerBlock(width, num_heads, mlp_ratio=mlp_ratio, dropout=dropout)
                                    for _ in range(depth))
        self.gated = nn.ModuleList(GatedCrossAttention(width, num_heads, mlp_ratio, dropout)
                                   for _ in range(0, depth, every))
        self.norm = nn.LayerNorm(width)

    def forward(self, outputs: dict[str, EncoderOutput]) -> FusionOutput:
        if self.target not in outputs:
            raise ValueError(f"gated cross-attention reads into the {self.target!r} stream, absent from this batch")
        own = outputs[self.target]
        batch = own.tokens.shape[0]
        x = torch.cat([self.cls.expand(batch, -1, -1), own.tokens], dim=1)  # (B, 1 + N, D)
        mask = torch.cat([own.mask.new_ones(batch, 1), own.mask], dim=1)
        sources = [m for m in sorted(outputs) if m != self.target]
        if sources:
            marked = [self.markers(m, outputs[m].tokens, outputs[m].mask) for m in sources]
            context = torch.cat([t for t, _ in marked], dim=1)  # (B, M, D)
            context_mask = torch.cat([m for _, m in marked], dim=1)
        for number, block in enumerate(self.blocks):
            if sources and number % self.every == 0:
                x = self.gated[number // self.every](x, context, context_mask)
            x = block(x, mask)
        x = self.norm(x)
        return FusionOutput(pooled=x[:, 0], tokens=x, mask=mask,
                            streams={self.target: EncoderOutput(tokens=x, mask=mask, pooled=x[:, 0])})

    def token_relevance(self, outputs: dict[str, EncoderOutput]) -> dict[str, torch.Tensor]:
        """How much the target stream's CLS drew from the other modalities' tokens in the last gated layer."""
        with keeping_attention_weights(self):
            self(outputs)
        weights = self.gated[-1].attend.last_weights.mean(dim=1)[:, 0]  # (B, M) over [m_1; X^(1); ...]
        return split_marked(weights, {m: out for m, out in outputs.items() if m != self.target})
