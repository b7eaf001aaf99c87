"""Reading a token sequence out by position: each real token goes to a fixed slot, its count of real
tokens before it, so a head can give every position its own weights (what *where* questions need)."""

from __future__ import annotations

import torch

from .positions import positions_from_mask


def place_by_position(values: torch.Tensor, mask: torch.Tensor, max_length: int) -> torch.Tensor:
    """Scatter per-token values into fixed slots by position among the real tokens.

    Args:
        values: (B, N, C) per-token values.
        mask: (B, N) bool, True for real tokens; padding (anywhere in the row) contributes nothing and
            moves nothing.
        max_length: the number of slots.

    Returns:
        (B, max_length, C): slot p holds the value of the example's (p + 1)-th real token, zeros past its end.
    """
    real = mask.long()
    positions = positions_from_mask(mask)  # (B, N)
    if values.shape[1] > max_length:  # only then can a row be too long: counting waits for the device
        longest = int(real.sum(dim=1).max()) if real.numel() else 0
        if longest > max_length:
            raise ValueError(f"a sequence of {longest} tokens is longer than max_length={max_length}")
    placed = values.new_zeros(values.shape[0], max_length, values.shape[-1])
    kept = values * mask[..., None].to(values.dtype)
    return placed.scatter_add(1, positions[..., None].expand_as(kept), kept)
