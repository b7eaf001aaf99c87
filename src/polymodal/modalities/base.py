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
        times: (N,) for encoders of timed media (video, audio): when each token happens, as a fraction
            [0, 1) of the span the encoder was given, NaN for a token with no time (a CLS); None for
            untimed modalities. A joint model with `time_code` lines up tokens of different modalities
            by these times.
        present: (B,) bool, False for examples that lack this modality (their tokens are a learned
            placeholder, see `models.absent`); None when every example has it.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor
    times: torch.Tensor | None = None
    present: torch.Tensor | None = None

    def presence(self) -> torch.Tensor:
        """(B,) bool: which examples have this modality (`present`, or all of them)."""
        if self.present is None:
            return torch.ones(self.mask.shape[0], dtype=torch.bool, device=self.mask.device)
        return self.present.to(torch.bool)

