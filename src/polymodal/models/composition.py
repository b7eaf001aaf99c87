"""The one composition (seed §2.3): modality encoders → an optional shared embedding space → a fusion.

Task heads sit on top (`build.PolymodalModel`). The CLIP-style dual encoder is this with late fusion and
an embedding space; the single-stream joint transformer is this with early fusion.
"""

from __future__ import annotations

import torch
from torch import nn

from ..modalities.base import EncoderOutput
from .absent import AbsentModalities
from .embedding import embed, logit_scale, projections
from .encoding import encode_all
from .output import ModelOutput


class MultimodalModel(nn.Module):
    """Encoders, then (with `embed_dim`) per-modality embeddings, then the fusion. An example that lacks a
    modality gets that modality's learned placeholder (`absent`) in its place.

    Args:
        encoders: modality name → encoder returning `EncoderOutput` of width `width`.
        fusion: a fusion module (see `polymodal.fusion`).
        width: D, the encoders' output width.
        embed_dim: E; when set, each modality's pooled encoder output is also projected into a shared,
            L2-normalised space before fusion, so contrastive tasks can align the encoders (CLIP; ALBEF's
            "align before fuse" next to fused tasks). None: no embedding space.
        init_temperature: the contrastive temperature to start from, with `embed_dim`.
    """

    def __init__(self, encoders: dict[str, nn.Module], fusion: nn.Module, *, width: int,
                 embed_dim: int | None = None, init_temperature: float = 0.07):
        super().__init__()
        self.width, self.embed_dim = width, embed_dim
        self.encoders = nn.ModuleDict(encoders)
        self.absent = AbsentModalities(list(encoders), width)
        if embed_dim is not None:
            self.projections = projections(list(encoders), width, embed_dim)
            self.logit_scale = logit_scale(init_temperature)
        self.fusion = fusion

    def forward(self, inputs: dict[str, dict[str, torch.Tensor]], fuse: bool = True) -> ModelOutput:
        """`fuse=False` stops after the encoders and the embedding space (what contrastive tasks read)."""
        outputs = encode_all(self.encoders, inputs, self.absent)
        embeddings, scale = embed(self.projections, self.logit_scale, outputs) if self.embed_dim else ({}, None)
        if not fuse:
            return ModelOutput(modalities=outputs, pooled=None, embeddings=embeddings, logit_scale=scale)
        fused = self.fusion(outputs)
        tokens = None if fused.tokens is None else EncoderOutput(tokens=fused.tokens, mask=fused.mask,
                                                                  pooled=fused.pooled)
        return ModelOutput(modalities=outputs, pooled=fused.pooled, fused=tokens, embeddings=embeddings,
                           logit_scale=scale, streams=fused.streams, scored=fused.scored,
                           score_weights=fused.score_weights)
