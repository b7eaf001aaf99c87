"""The one output every modality encoder returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class EncoderOutput:
    """What a modality encoder hands to fusion and the joint model.

    Attributes:
        tokens: (B, N, D) token sequence, already projected to the model width D.
        mask: (B, N) bool, True for real tokens, False for padding.
        pooled: (B, D) one vector per example (CLS token or masked mean).
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens.

    Args:
        tokens: (B, N, D).
        mask: (B, N) bool, True for real tokens.

    Returns:
        (B, D) mean of the tokens where mask is True.
    """
    weights = mask.to(tokens.dtype).unsqueeze(-1)  # (B, N, 1)
    return (tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)
