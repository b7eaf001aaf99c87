"""Early fusion (seed §2.2, §4.1): concatenate the modality sequences, each opened by its marker token."""

from __future__ import annotations

import torch
from torch import nn

from ..layers.markers import ModalityMarkers
from ..modalities.base import EncoderOutput


class EarlyFusion(nn.Module):
    """X = [m_1; X^(1); m_2; X^(2); ...] over modalities in sorted order.

    Args:
        modalities: the modality names this fusion accepts.
        width: token width D.
    """

    def __init__(self, modalities: list[str], width: int):
        super().__init__()
        self.markers = ModalityMarkers(sorted(modalities), width)

    def forward(self, outputs: dict[str, EncoderOutput]) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: outputs per modality. Returns: tokens (B, sum(N_m + 1), D), mask (B, sum(N_m + 1))."""
        tokens, masks = [], []
        for name in sorted(outputs):
            t, m = self.markers(name, outputs[name].tokens, outputs[name].mask)
            tokens.append(t)
            masks.append(m)
        return torch.cat(tokens, dim=1), torch.cat(masks, dim=1)

    @staticmethod
    def times(outputs: dict[str, EncoderOutput]) -> torch.Tensor:
        """(sum(N_m + 1),) each fused token's time (`EncoderOutput.times`), laid out as `forward` lays out
        the tokens; NaN for the markers and for every token of an untimed modality."""
        parts = []
        for name in sorted(outputs):
            out = outputs[name]
            times = out.times if out.times is not None else out.tokens.new_full((out.tokens.shape[1],), float("nan"))
            parts.append(torch.cat([times.new_full((1,), float("nan")), times.float()]))
        return torch.cat(parts)
