"""Single-stream joint transformer (seed §2.3, §4): early fusion of all modalities in one sequence."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from ..fusion.early import EarlyFusion
from ..layers.positions import LearnedPositions, SinusoidalPositions, time_code_table
from ..layers.transformer import TransformerEncoder
from ..modalities.base import EncoderOutput
from .embedding import embed, logit_scale, projections
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
        pooling: how the pooled vector is read. `cls`: the CLS output. `positional`: the CLS output
            together with every position's output through its own weights (each token is projected to
            `readout_dim`, padding zeroed, the whole sequence flattened and mapped to D), so a head
            can tell *where* something is, not only *what* is there: what spatial questions need.
        readout_dim: per-token width of the positional readout.
        embed_dim: E; when set, each modality's pooled encoder output is also projected into a shared,
            L2-normalised space before fusion, so contrastive tasks can align the encoders (ALBEF's
            "align before fuse") next to the fused tasks. None: no embedding space.
        init_temperature: the contrastive temperature to start from, with `embed_dim`.
        time_code: also add to every timed token (video frames, audio steps: `EncoderOutput.times`) a code
            of *when* it happens (`time_code_table`), the same for every modality, so attention can line up
            a sound with the frame it belongs to ("is the sound in sync with the bounce?"). The times are
            fractions of what each encoder was given: they line up when the frames and the audio cover
            the same span (uniform frame sampling over the whole clip, audio `duration` = clip length).
    """

    def __init__(self, encoders: dict[str, nn.Module], *, width: int, depth: int = 4, num_heads: int = 4,
                 mlp_ratio: float = 4.0, dropout: float = 0.0, positions: str = "sinusoidal",
                 max_length: int = 512, pooling: str = "cls", readout_dim: int = 16, embed_dim: int | None = None,
                 init_temperature: float = 0.07, time_code: bool = False):
        super().__init__()
        if positions not in ("sinusoidal", "learned"):
            raise ConfigError(f"model.positions: expected 'sinusoidal' or 'learned', got {positions!r}")
        if pooling not in ("cls", "positional"):
            raise ConfigError(f"model.pooling: expected 'cls' or 'positional', got {pooling!r}")
        self.pooling = pooling
        self.max_length = max_length
        self.width, self.time_code = width, time_code
        if pooling == "positional":
            self.readout_token = nn.Linear(width, readout_dim)
            self.readout = nn.Sequential(nn.Linear(width + max_length * readout_dim, width), nn.LayerNorm(width))
        self.encoders = nn.ModuleDict(encoders)
        self.embed_dim = embed_dim
        if embed_dim is not None:
            self.projections = projections(list(encoders), width, embed_dim)
            self.logit_scale = logit_scale(init_temperature)
        self.fusion = EarlyFusion(list(encoders), width)
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        nn.init.normal_(self.cls, std=0.02)
        self.positions = (SinusoidalPositions if positions == "sinusoidal" else LearnedPositions)(width, max_length)
        self.transformer = TransformerEncoder(width, depth, num_heads, mlp_ratio=mlp_ratio, dropout=dropout)

    def forward(self, inputs: dict[str, dict[str, torch.Tensor]], fuse: bool = True) -> ModelOutput:
        """`fuse=False` stops after the encoders and the embedding space (what contrastive tasks read)."""
        outputs = encode_all(self.encoders, inputs)
        embeddings, scale = embed(self.projections, self.logit_scale, outputs) if self.embed_dim else ({}, None)
        if not fuse:
            return ModelOutput(modalities=outputs, pooled=None, embeddings=embeddings, logit_scale=scale)
        tokens, mask = self.fusion(outputs)  # (B, N, D), (B, N)
        if self.time_code:
            tokens = tokens + time_code_table(self.fusion.times(outputs), self.width).to(tokens)
        batch = tokens.shape[0]
        tokens = torch.cat([self.cls.expand(batch, -1, -1), tokens], dim=1)  # (B, 1 + N, D)
        mask = torch.cat([mask.new_ones(batch, 1), mask], dim=1)
        hidden = self.transformer(self.positions(tokens), mask)
        pooled = hidden[:, 0] if self.pooling == "cls" else self._positional_readout(hidden, mask)
        return ModelOutput(
            modalities=outputs,
            pooled=pooled,
            fused=EncoderOutput(tokens=hidden, mask=mask, pooled=pooled),
            embeddings=embeddings,
            logit_scale=scale,
        )

    def _positional_readout(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, 1 + N, D) outputs, (B, 1 + N) mask → (B, D) from the CLS and every position's own weights."""
        batch, length = mask.shape
        per_token = self.readout_token(hidden[:, 1:]) * mask[:, 1:, None]  # (B, N, readout_dim), padding zeroed
        flat = torch.zeros(batch, self.max_length, per_token.shape[-1], dtype=per_token.dtype, device=per_token.device)
        flat[:, : length - 1] = per_token  # (B, max_length, readout_dim): a fixed place per position
        return self.readout(torch.cat([hidden[:, 0], flat.flatten(1)], dim=-1))  # (B, D)
