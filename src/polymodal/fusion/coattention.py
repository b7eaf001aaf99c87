"""Two-stream co-attention (ViLBERT, docs/concepts.md#joint-modelling multi-stream): in each co-attention block the
two streams
swap keys and values (each one's queries attend to the other's tokens), then each runs a self-attention
block of its own."""

from __future__ import annotations

import torch
from torch import nn

from ..layers.attention import MultiHeadAttention, keeping_attention_weights
from ..layers.transformer import TransformerBlock
from ..modalities.base import EncoderOutput
from .base import FusionOutput
from .streams import StreamReadout, StreamStarts


class CoAttentionLayer(nn.Module):
    """x_A ← x_A + Attn(q = LN(x_A), kv = LN(x_B)), and the same for B from the same inputs; then MLPs."""

    def __init__(self, modalities: list[str], width: int, num_heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.modalities = sorted(modalities)
        self.norm = nn.ModuleDict({m: nn.LayerNorm(width) for m in self.modalities})
        self.attend = nn.ModuleDict({m: MultiHeadAttention(width, num_heads, context_dim=width, dropout=dropout)
                                     for m in self.modalities})
        self.mlp_norm = nn.ModuleDict({m: nn.LayerNorm(width) for m in self.modalities})
        hidden = int(width * mlp_ratio)
        self.mlp = nn.ModuleDict({m: nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width),
                                                   nn.Dropout(dropout)) for m in self.modalities})

    def forward(self, tokens: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        a, b = self.modalities
        normed = {m: self.norm[m](tokens[m]) for m in self.modalities}
        out = {a: tokens[a] + self.attend[a](normed[a], normed[b], context_mask=masks[b]),
               b: tokens[b] + self.attend[b](normed[b], normed[a], context_mask=masks[a])}
        return {m: x + self.mlp[m](self.mlp_norm[m](x)) for m, x in out.items()}


class CoAttentionFusion(nn.Module):
    """ViLBERT-style: `depth` × [co-attention layer, then a self-attention block per stream].

    Args:
        modalities: exactly two modality names.
        width: D.
        depth: co-attention blocks.
        num_heads: attention heads in each co-attention layer (must divide the width).
        mlp_ratio: the MLP's hidden width in each co-attention layer, as a multiple of the width.
        dropout: dropout on attention weights and MLP outputs in each co-attention layer.
        pooling, max_length, readout_dim: each stream's readout (`streams.StreamReadout`).
    """

    gives_tokens = True  # the joint token sequence, besides the pooled vector

    def __init__(self, modalities: list[str], width: int, *, depth: int = 2, num_heads: int = 4,
                 mlp_ratio: float = 4.0, dropout: float = 0.0, pooling: str = "cls", max_length: int = 128,
                 readout_dim: int = 16):
        super().__init__()
        if len(modalities) != 2:
            raise ValueError(f"co-attention pairs exactly two modalities, got {sorted(modalities)}")
        self.starts = StreamStarts(modalities, width)
        self.co = nn.ModuleList(CoAttentionLayer(modalities, width, num_heads, mlp_ratio, dropout) for _ in range(depth))
        self.own = nn.ModuleList(
            nn.ModuleDict({m: TransformerBlock(width, num_heads, mlp_ratio=mlp_ratio, dropout=dropout)
                           for m in sorted(modalities)}) for _ in range(depth))
        self.readout = StreamReadout(modalities, width, pooling=pooling, max_length=max_length,
                                     readout_dim=readout_dim)

    def forward(self, outputs: dict[str, EncoderOutput]) -> FusionOutput:
        tokens, masks = self.starts(outputs)  # {m: (B, 1 + N_m, D)}
        for co, own in zip(self.co, self.own):
            if len(tokens) == 2:  # with one stream absent there is nothing to co-attend to
                tokens = co(tokens, masks)
            tokens = {m: own[m](x, masks[m]) for m, x in tokens.items()}
        return self.readout(tokens, masks)

    def token_relevance(self, outputs: dict[str, EncoderOutput]) -> dict[str, torch.Tensor]:
        """How much each stream's CLS drew from the other stream's tokens in the last co-attention layer."""
        with keeping_attention_weights(self):
            self(outputs)
        co, names = self.co[-1], sorted(outputs)
        if len(names) != 2:
            return {}
        a, b = names
        return {b: co.attend[a].last_weights.mean(dim=1)[:, 0, 1:],  # a's CLS over b's tokens (past b's CLS)
                a: co.attend[b].last_weights.mean(dim=1)[:, 0, 1:]}
