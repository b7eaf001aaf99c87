"""Single-stream joint transformer (seed §2.3, §4): early fusion of all modalities in one sequence."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from ..fusion.early import EarlyFusion
from ..layers.positions import LearnedPositions, SinusoidalPositions
from ..layers.transformer import TransformerEncoder
from ..modalities.base import EncoderOutput
from .encoding import encode_all
from .output import ModelOutput


class JointTransformer(nn.Module):
    """[CLS; m_1; X^(1); m_2; X^(2) ...] + PE → transformer → pooled = CLS output.

    Args:
        encoders: modality name → encoder returning `EncoderOutput` of width `width`.
        width: D.
        depth: joint transformer layers.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / D.
        dropout: dropout in the joint layers.
        positions: `sinusoidal` (seed §4.3) or `learned`, over the joint sequence.
        max_length: longest joint sequence.
    """

    def __init__(self, encoders: dict[str, nn.Module], *, width: int, depth: int = 4, num_heads: int = 4,
                 mlp_ratio: float = 4.0, dropout: float = 0.0, positions: str = "sinusoidal",
                 max_length: int = 512):
        super().__init__()
        if positions not in ("sinusoidal", "learned"):
            raise ConfigError(f"model.positions: expected 'sinusoidal' or 'learned', got {positions!r}")
        self.encoders = nn.ModuleDict(encoders)
        self.fusion = EarlyFusion(list(encoders), width)
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        nn.init.normal_(self.cls, std=0.02)
        self.positions = (SinusoidalPositions if positions == "sinusoidal" else LearnedPositions)(width, max_length)
        self.transformer = TransformerEncoder(width, depth, num_heads, mlp_ratio=mlp_ratio, dropout=dropout)

    def forward(self, inputs: dict[str, dict[str, torch.Tensor]]) -> ModelOutput:
        outputs = encode_all(self.encoders, inputs)
        tokens, mask = self.fusion(outputs)  # (B, N, D), (B, N)
        batch = tokens.shape[0]
        tokens = torch.cat([self.cls.expand(batch, -1, -1), tokens], dim=1)  # (B, 1 + N, D)
        mask = torch.cat([mask.new_ones(batch, 1), mask], dim=1)
        hidden = self.transformer(self.positions(tokens), mask)
        return ModelOutput(
            modalities=outputs,
            pooled=hidden[:, 0],
            fused=EncoderOutput(tokens=hidden, mask=mask, pooled=hidden[:, 0]),
        )
