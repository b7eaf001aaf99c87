"""Absent modalities: a learned placeholder stands in for a modality an example lacks.

An example without, say, its audio gets one real token (the audio placeholder) and nothing else in that
modality's place, and the placeholder as its pooled vector; what the encoder made of the filler input is
never read. So every fusion sees an absent modality the way it sees padding: whatever the filler, the
example's output is the same, in any batch.
"""

from __future__ import annotations

import torch
from torch import nn

from ..modalities.base import EncoderOutput


class AbsentModalities(nn.Module):
    """One learned vector per modality.

    Args:
        modalities: the model's modality names.
        width: D.
    """

    def __init__(self, modalities: list[str], width: int):
        super().__init__()
        # zeros: "nothing here" to start from, and building them draws nothing from the random state, so the
        # other parameters initialise as they did before placeholders existed
        self.vectors = nn.ParameterDict({m: nn.Parameter(torch.zeros(width)) for m in sorted(modalities)})

    def fill(self, name: str, out: EncoderOutput, present: torch.Tensor) -> EncoderOutput:
        """`out` with every example where `present` (B,) is False replaced by the placeholder."""
        absent = ~present.to(out.tokens.device)
        first = torch.zeros(out.tokens.shape[1], 1, dtype=out.tokens.dtype, device=out.tokens.device)
        first[0] = 1.0
        stand_in = first * self.vectors[name].to(out.tokens.dtype)  # (N, D): the placeholder, then nothing
        tokens = torch.where(absent[:, None, None], stand_in, out.tokens)  # (B, N, D)
        mask = out.mask & ~absent[:, None]
        mask[:, 0] |= absent
        pooled = torch.where(absent[:, None], self.vectors[name].to(out.pooled.dtype), out.pooled)
        return EncoderOutput(tokens=tokens, mask=mask, pooled=pooled, times=out.times, present=present)

    def alone(self, name: str, batch: int, device: torch.device | None = None) -> EncoderOutput:
        """The modality absent from all `batch` examples: each gets the placeholder as its one token."""
        vector = self.vectors[name]
        tokens = vector.expand(batch, 1, -1)  # (B, 1, D)
        return EncoderOutput(tokens=tokens, mask=torch.ones(batch, 1, dtype=torch.bool, device=vector.device),
                             pooled=vector.expand(batch, -1),
                             present=torch.zeros(batch, dtype=torch.bool, device=vector.device))
