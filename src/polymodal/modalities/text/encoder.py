"""Text transformer encoder: token ids -> EncoderOutput."""

from __future__ import annotations

import torch
from torch import nn

from polymodal.layers import LearnedPositions, SinusoidalPositions, TransformerEncoder, init_weights_
from polymodal.modalities.base import EncoderOutput

_POSITIONS = {"learned": LearnedPositions, "sinusoidal": SinusoidalPositions}


class TextEncoder(nn.Module):
    """Token embedding + positions + bidirectional transformer, projected to the model width.

    The pooled vector is the projected output at position 0, the [CLS] token the tokenizer puts first
    (`pooling: cls`), or the mean over the real tokens (`pooling: mean`, as sentence encoders such as
    MiniLM pool).

    Args:
        vocab_size: number of token ids.
        out_dim: width D of the returned tokens and pooled vector.
        width: internal transformer width.
        depth: number of transformer blocks.
        num_heads: attention heads (must divide `width`).
        max_length: longest sequence accepted.
        positions: "learned" or "sinusoidal" (docs/concepts.md#math-positions).
        dropout: dropout on embeddings and inside the transformer.
        pad_id: id of the padding token; its embedding is kept at zero.
        pooling: "cls" or "mean".
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        out_dim: int,
        width: int = 128,
        depth: int = 2,
        num_heads: int = 4,
        max_length: int = 64,
        positions: str = "learned",
        dropout: float = 0.0,
        pad_id: int = 0,
        pooling: str = "cls",
    ) -> None:
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling: expected 'cls' or 'mean', got {pooling!r}")
        self.pooling = pooling
        if positions not in _POSITIONS:
            raise ValueError(f"unknown positions={positions!r}; choose one of {sorted(_POSITIONS)}")
        self.max_length = max_length
        self.embed = nn.Embedding(vocab_size, width, padding_idx=pad_id)
        self.positions = _POSITIONS[positions](width, max_length)
        self.drop = nn.Dropout(dropout)
        self.encoder = TransformerEncoder(width, depth, num_heads, dropout=dropout)
        # the encoder already ends in a LayerNorm; a second square Linear would add nothing learnable
        self.proj = nn.Identity() if width == out_dim else nn.Linear(width, out_dim)
        init_weights_(self)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> EncoderOutput:
        """Encode a padded batch of token ids.

        Args:
            ids: (B, L) long token ids, [CLS] first.
            mask: (B, L) bool, True for real tokens.

        Returns:
            EncoderOutput with tokens (B, L, out_dim), mask (B, L), pooled (B, out_dim).
        """
        if ids.shape[1] > self.max_length:
            raise ValueError(f"text length {ids.shape[1]} exceeds max_length={self.max_length}")
        x = self.drop(self.positions(self.embed(ids)))  # (B, L, width)
        x = self.encoder(x, mask)  # (B, L, width)
        tokens = self.proj(x)  # (B, L, out_dim)
        if self.pooling == "cls":
            return EncoderOutput(tokens=tokens, mask=mask, pooled=tokens[:, 0])
        weights = mask.to(tokens.dtype).unsqueeze(-1)  # (B, L, 1)
        pooled = (tokens * weights).sum(1) / weights.sum(1).clamp(min=1)
        return EncoderOutput(tokens=tokens, mask=mask, pooled=pooled)
