"""Interactive fusion (docs/concepts.md#fusion) with bidirectional cross-attention (#math-cross-attention), for any
number of streams.

Each modality keeps its own stream of layers. In a layer l listed in `layers`, stream A first attends to
itself, O^A = X^A + SelfAttention(X^A), then its self-attention output queries the other streams' layer
inputs, O^{A→B} = CrossAttention(O^A, X^B, X^B), and every stream does the same at once (B → A too);
with more than two streams, X^B is every other stream's tokens together. Other layers are unimodal.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layers.attention import keeping_attention_weights
from ..layers.transformer import TransformerBlock
from ..modalities.base import EncoderOutput
from .base import FusionOutput
from .streams import StreamReadout, StreamStarts, others


class CrossAttentionFusion(nn.Module):
    """One transformer stream per modality, with bidirectional cross-attention at chosen layers.

    Args:
        modalities: the modality names (two or more).
        width: D.
        depth: layers per stream.
        layers: the 1-based layers that cross-attend (`[1, 3]`); None: every layer.
        num_heads: attention heads in each block (must divide the width).
        mlp_ratio: the MLP's hidden width in each block, as a multiple of the width.
        dropout: dropout on attention weights and MLP outputs in each block.
        pooling, max_length, readout_dim: each stream's readout (`streams.StreamReadout`).
    """

    gives_tokens = True  # the joint token sequence, besides the pooled vector

    def __init__(self, modalities: list[str], width: int, *, depth: int = 2, layers: list[int] | None = None,
                 num_heads: int = 4, mlp_ratio: float = 4.0, dropout: float = 0.0, pooling: str = "cls",
                 max_length: int = 128, readout_dim: int = 16):
        super().__init__()
        if len(modalities) < 2:
            raise ValueError(f"cross-attention fuses two modalities or more, got {sorted(modalities)}")
        self.layers = sorted(set(range(1, depth + 1) if layers is None else layers))
        if not self.layers or not all(1 <= l <= depth for l in self.layers):
            raise ValueError(f"layers: expected layer numbers from 1 to depth={depth}, got {layers!r}")
        self.starts = StreamStarts(modalities, width)
        self.blocks = nn.ModuleList(
            nn.ModuleDict({m: TransformerBlock(width, num_heads, mlp_ratio=mlp_ratio, dropout=dropout,
                                               context_dim=width if l in self.layers else None)
                           for m in sorted(modalities)})
            for l in range(1, depth + 1))
        self.readout = StreamReadout(modalities, width, pooling=pooling, max_length=max_length,
                                     readout_dim=readout_dim)

    def forward(self, outputs: dict[str, EncoderOutput]) -> FusionOutput:
        tokens, masks = self.starts(outputs)  # {m: (B, 1 + N_m, D)}
        for number, layer in enumerate(self.blocks, start=1):
            if number not in self.layers or len(tokens) < 2:  # unimodal layer, or nothing to attend to
                tokens = {m: layer[m].without_context(x, masks[m]) for m, x in tokens.items()}
                continue
            # X^B as stream B's own self-attention reads it: its layer input, normalised
            inputs = {m: layer[m].normed(x) for m, x in tokens.items()}
            updated = {}
            for m, x in tokens.items():
                context, context_mask = others(inputs, masks, m)  # (B, M, D), (B, M)
                updated[m] = layer[m](x, masks[m], context=context, context_mask=context_mask)
            tokens = updated
        return self.readout(tokens, masks)

    def token_relevance(self, outputs: dict[str, EncoderOutput]) -> dict[str, torch.Tensor]:
        """How much each stream's CLS drew from the other streams' tokens, in the last cross-attention layer
        (weights averaged over heads, and over the streams that attend to a modality)."""
        with keeping_attention_weights(self):
            self(outputs)
        layer = self.blocks[self.layers[-1] - 1]
        names = sorted(outputs)
        lengths = {m: 1 + outputs[m].tokens.shape[1] for m in names}  # each stream's CLS first
        relevance: dict[str, list[torch.Tensor]] = {m: [] for m in names}
        for query in names:
            weights = layer[query].cross.last_weights.mean(dim=1)[:, 0]  # (B, M): the CLS over the others
            start = 0
            for other in (m for m in names if m != query):
                relevance[other].append(weights[:, start + 1:start + lengths[other]])
                start += lengths[other]
        return {m: torch.stack(r).mean(0) for m, r in relevance.items() if r}
