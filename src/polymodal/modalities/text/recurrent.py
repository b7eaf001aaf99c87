"""Recurrent text encoder: a bidirectional GRU over token embeddings (the classic VQA question encoder)."""

from __future__ import annotations

import re
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from polymodal.modalities.base import EncoderOutput

# `nn.GRU(bidirectional=True)` keys of run folders saved before the directions were split: gru.weight_ih_l1_reverse
_LEGACY_KEY = re.compile(r"gru\.(weight_ih|weight_hh|bias_ih|bias_hh)_l(\d+)(_reverse)?$")


def reverse_prefix(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse the first lengths[b] steps of each row of x (B, L, ...); the padding after them stays put.
    Applied twice it gives x back."""
    steps = torch.arange(x.shape[1], device=x.device)
    index = torch.where(steps < lengths[:, None], lengths[:, None] - 1 - steps, steps)  # (B, L)
    return x.gather(1, index.view(*index.shape, *[1] * (x.dim() - 2)).expand_as(x))


class RecurrentTextEncoder(nn.Module):
    """Token embedding + bidirectional GRU, projected to the model width.

    Word order is built into a recurrence, so each token's state already says where in the sentence it
    stands ("the red circle" before or after "left of"). A small transformer has to learn that from
    position embeddings, which on short synthetic questions it does slowly: on the shapes spatial
    questions a 1-2 layer transformer question encoder stayed at chance for 2000 steps where this one
    learnt them (see the README's results).

    Args:
        vocab_size: number of token ids.
        out_dim: width D of the returned tokens and pooled vector.
        width: GRU hidden size per direction is width / 2, so token states are `width` wide.
        depth: stacked GRU layers.
        max_length: longest sequence accepted.
        dropout: dropout on embeddings and between GRU layers.
        pad_id: id of the padding token; its embedding is kept at zero.
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        out_dim: int,
        width: int = 128,
        depth: int = 1,
        max_length: int = 64,
        dropout: float = 0.0,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        if width % 2:
            raise ValueError(f"width must be even (two GRU directions of width / 2), got {width}")
        self.max_length = max_length
        self.embed = nn.Embedding(vocab_size, width, padding_idx=pad_id)
        self.drop = nn.Dropout(dropout)
        self.dropout = dropout
        # one GRU per direction and layer rather than nn.GRU(bidirectional=True) over packed sequences: the
        # backward direction reads each sentence's real tokens reversed (`reverse_prefix`), so padding never
        # reaches a real token's state, and nothing here stops torch.compile (packing does)
        self.layers = nn.ModuleList(
            nn.ModuleDict({"ahead": nn.GRU(width, width // 2, batch_first=True),
                           "behind": nn.GRU(width, width // 2, batch_first=True)}) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Identity() if width == out_dim else nn.Linear(width, out_dim)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> EncoderOutput:
        """Encode a padded batch of token ids.

        Args:
            ids: (B, L) long token ids.
            mask: (B, L) bool, True for real tokens (a prefix of each row).

        Returns:
            EncoderOutput with tokens (B, L, out_dim) (zeros at padding), mask (B, L) and pooled
            (B, out_dim) from the last forward and first backward states.
        """
        if ids.shape[1] > self.max_length:
            raise ValueError(f"text length {ids.shape[1]} exceeds max_length={self.max_length}")
        lengths = mask.sum(dim=1).clamp(min=1)  # (B,) an empty row reads its first (padding) token
        states = self.drop(self.embed(ids))  # (B, L, width)
        for i, layer in enumerate(self.layers):
            if i:  # between layers, as nn.GRU's `dropout`
                states = F.dropout(states, self.dropout, self.training)
            ahead, _ = layer["ahead"](states)  # (B, L, width / 2): causal, so padding comes after what matters
            behind, _ = layer["behind"](reverse_prefix(states, lengths))
            states = torch.cat([ahead, reverse_prefix(behind, lengths)], dim=-1)  # (B, L, width)
        rows = torch.arange(ids.shape[0], device=ids.device)
        # the last layer's forward state after the last word and backward state after the first
        half = states.shape[-1] // 2
        summary = torch.cat([states[rows, lengths - 1, :half], states[:, 0, half:]], dim=-1)  # (B, width)
        tokens = self.proj(self.norm(states)) * mask.unsqueeze(-1)  # (B, L, out_dim), zeros at padding
        return EncoderOutput(tokens=tokens, mask=mask, pooled=self.proj(self.norm(summary)))

    def rename_old_keys(self, state: dict[str, Any], prefix: str) -> None:
        """`gru.weight_ih_l1_reverse` (one bidirectional nn.GRU, before the directions were split) →
        `layers.1.behind.weight_ih_l0`."""
        for key in [k for k in state if k.startswith(prefix)]:
            if match := _LEGACY_KEY.match(key[len(prefix):]):
                name, layer, reverse = match.groups()
                state[f"{prefix}layers.{layer}.{'behind' if reverse else 'ahead'}.{name}_l0"] = state.pop(key)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        self.rename_old_keys(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
