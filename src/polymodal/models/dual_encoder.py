"""Dual encoder (seed §2.2 late fusion, §3.1 contrastive pre-training): CLIP-style."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..fusion.late import LateFusion
from .encoding import encode_all
from .output import ModelOutput

MAX_LOGIT_SCALE = math.log(100.0)  # OpenCLIP clamps the learnt temperature at 1/100


class DualEncoder(nn.Module):
    """One encoder per modality, a linear projection of each pooled vector into a shared space.

    Args:
        encoders: modality name → encoder returning `EncoderOutput` of width `width`.
        width: D, the encoders' output width.
        embed_dim: E, the shared embedding width.
        init_temperature: initial softmax temperature (logit scale = 1 / temperature).
        combine: how `pooled` (for classification / VQA heads) combines the modalities.
    """

    def __init__(self, encoders: dict[str, nn.Module], *, width: int, embed_dim: int = 128,
                 init_temperature: float = 0.07, combine: str = "concat"):
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.projections = nn.ModuleDict({name: nn.Linear(width, embed_dim, bias=False) for name in encoders})
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))
        self.fusion = LateFusion(list(encoders), width, combine)

    def forward(self, inputs: dict[str, dict[str, torch.Tensor]]) -> ModelOutput:
        outputs = encode_all(self.encoders, inputs)
        embeddings = {name: F.normalize(self.projections[name](out.pooled), dim=-1) for name, out in outputs.items()}
        pooled = self.fusion({name: out.pooled for name, out in outputs.items()})
        return ModelOutput(
            modalities=outputs,
            pooled=pooled,
            embeddings=embeddings,
            logit_scale=self.logit_scale.clamp(0, MAX_LOGIT_SCALE).exp(),
        )
