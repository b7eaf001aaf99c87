"""Gated fusion by a learned weighted sum (docs/concepts.md#fusion early fusion by weighting; the Gated Multimodal Unit
of Arevalo et al. 2017, generalised to any number of modalities).

Each modality's pooled vector x_m becomes h_m = tanh(W_m x_m); a gate looks at all of them at once,
z = softmax_m(W_z [x_1; x_2; ...]) per example and feature, and the fused vector is sum_m z_m ⊙ h_m.
The gate learns, per example, how much each modality should count. An example that lacks a modality
(`EncoderOutput.present`) gives it no weight.
"""

from __future__ import annotations

import torch
from torch import nn

from ..modalities.base import EncoderOutput
from .base import FusionOutput


class GatedSumFusion(nn.Module):
    """pooled = sum_m z_m ⊙ tanh(W_m x_m), z = softmax over the modalities of W_z [x_1; ...; x_M].

    Args:
        modalities: the modality names, in sorted order in the gate's input.
        width: D.
    """

    gives_tokens = False  # only a pooled vector: nothing for a decoder to attend to (memory: fused)

    def __init__(self, modalities: list[str], width: int):
        super().__init__()
        self.modalities = sorted(modalities)
        self.transform = nn.ModuleDict({m: nn.Linear(width, width) for m in self.modalities})
        self.gate = nn.Linear(width * len(self.modalities), width * len(self.modalities))

    def forward(self, outputs: dict[str, EncoderOutput]) -> FusionOutput:
        if not outputs:
            raise ValueError(f"gated-sum fusion needs at least one of {self.modalities}")
        reference = next(iter(outputs.values())).pooled
        batch, width = reference.shape
        pooled = [outputs[m].pooled if m in outputs else torch.zeros_like(reference) for m in self.modalities]
        absent = torch.zeros(batch, dtype=torch.bool, device=reference.device)  # a modality not in the batch
        present = torch.stack([outputs[m].presence() if m in outputs else absent for m in self.modalities],
                              dim=1)  # (B, M)
        logits = self.gate(torch.cat(pooled, dim=-1)).view(batch, len(self.modalities), width)
        logits = logits.masked_fill(~present[..., None], float("-inf"))
        weights = logits.softmax(dim=1)  # (B, M, D): per example and feature, over the modalities it has
        values = torch.stack([self.transform[m](x).tanh() for m, x in zip(self.modalities, pooled)], dim=1)
        return FusionOutput(pooled=(weights * values).sum(dim=1))
