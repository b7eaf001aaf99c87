"""Modality marker tokens (docs/concepts.md#math-input) and modality type embeddings."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ModalityMarkers(nn.Module):
    """Marks which modality a token sequence comes from, before sequences are concatenated.

    docs/concepts.md#math-input puts a special marker token m_k at the start of modality k's sequence. We prepend that
    learned token and also add a learned per-modality type embedding to every token (marker included),
    so each token still carries its modality after concatenation and attention mixing.

    Args:
        names: modality names, e.g. ("image", "text"); index i is modality i.
        dim: token width.
    """

    def __init__(self, names: Sequence[str], dim: int) -> None:
        super().__init__()
        if len(set(names)) != len(names):
            raise ValueError(f"modality names must be unique, got {list(names)}")
        self.names = tuple(names)
        self.marker = nn.Embedding(len(self.names), dim)
        self.type_embedding = nn.Embedding(len(self.names), dim)
        nn.init.normal_(self.marker.weight, std=0.02)
        nn.init.normal_(self.type_embedding.weight, std=0.02)

    def forward(self, name: str, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prepend modality `name`'s marker and add its type embedding.

        Args:
            name: one of `names`.
            tokens: (B, N, dim).
            mask: (B, N) bool, True for real tokens.

        Returns:
            tokens: (B, N+1, dim), marker first.
            mask: (B, N+1) bool, the marker counted as a real token.
        """
        if name not in self.names:
            raise ValueError(f"unknown modality {name!r}; known modalities: {list(self.names)}")
        index = self.names.index(name)
        batch = tokens.shape[0]
        marker = self.marker.weight[index].expand(batch, 1, -1)  # (B, 1, dim)
        tokens = torch.cat([marker, tokens], dim=1) + self.type_embedding.weight[index]  # (B, N+1, dim)
        real = torch.ones(batch, 1, dtype=torch.bool, device=mask.device)
        return tokens, torch.cat([real, mask], dim=1)  # (B, N+1)
