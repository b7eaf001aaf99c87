"""The backbone, the one composition (docs/concepts.md#joint-modelling): modality encoders → an optional shared
embedding space →
a fusion (→ a text decoder).

Task heads sit on top (`system.MultitaskModel`). The CLIP-style dual encoder is this with late fusion and
an embedding space; the single-stream joint transformer is this with early fusion.
"""

from __future__ import annotations

import torch
from torch import nn

from ..fusion.base import FusionOutput
from ..layers import ModalityMarkers
from ..modalities.base import EncoderOutput
from .absent import AbsentModalities
from .embedding import embed, logit_scale, projections
from .encoding import encode_all
from .output import ModelOutput

MEMORIES = ("modalities", "fused", "pooled")  # what a decoder may cross-attend to


class Backbone(nn.Module):
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
        projection_init: how the shared space's projections start: "default" (nn.Linear's random
            initialisation) or "identity" (needs `embed_dim` = `width`: the space starts as the encoders'
            pooled vectors, e.g. a distillation student cut from its teacher starts in the teacher's space).
        decoder: a text decoder cross-attending to a memory of width `width` (docs/concepts.md#math-cross-attention),
        for generative
            tasks; None: no decoder.
        memory: what the decoder attends to: "modalities" (every modality's tokens, each sequence behind
            its modality's marker token, docs/concepts.md#math-input), "fused" (the fusion's pooled vector, then its
            token
            sequence) or "pooled" (the fusion's pooled vector alone: what a classifier head reads; any fusion).
    """

    def __init__(self, encoders: dict[str, nn.Module], fusion: nn.Module, *, width: int,
                 embed_dim: int | None = None, init_temperature: float = 0.07, decoder: nn.Module | None = None,
                 memory: str = "modalities", projection_init: str = "default"):
        super().__init__()
        if memory not in MEMORIES:
            raise ValueError(f"memory: expected one of {', '.join(MEMORIES)}, got {memory!r}")
        self.width, self.embed_dim = width, embed_dim
        self.encoders = nn.ModuleDict(encoders)
        self.absent = AbsentModalities(list(encoders), width)
        if embed_dim is not None:
            self.projections = projections(list(encoders), width, embed_dim, projection_init)
            self.logit_scale = logit_scale(init_temperature)
        self.fusion = fusion
        self.memory = memory
        if decoder is not None:
            self.decoder = decoder
            if memory == "modalities" and self._reads_memory:
                self.memory_markers = ModalityMarkers(sorted(encoders), width)
        else:
            self.decoder = None

    def forward(self, inputs: dict[str, dict[str, torch.Tensor]], fuse: bool = True) -> ModelOutput:
        """`fuse=False` stops after the encoders and the embedding space (what contrastive tasks read)."""
        outputs = encode_all(self.encoders, inputs, self.absent)
        embeddings, scale = embed(self.projections, self.logit_scale, outputs) if self.embed_dim else ({}, None)
        if not fuse:
            memory = self._memory(outputs, None) if self._reads_memory and self.memory == "modalities" else None
            return ModelOutput(modalities=outputs, pooled=None, embeddings=embeddings, logit_scale=scale,
                               memory=memory)
        fused = self.fusion(outputs)
        tokens = None if fused.tokens is None else EncoderOutput(tokens=fused.tokens, mask=fused.mask,
                                                                  pooled=fused.pooled)
        return ModelOutput(modalities=outputs, pooled=fused.pooled, fused=tokens, embeddings=embeddings,
                           logit_scale=scale, streams=fused.streams, scored=fused.scored,
                           score_weights=fused.score_weights,
                           memory=self._memory(outputs, fused) if self._reads_memory else None)

    @property
    def _reads_memory(self) -> bool:
        """A decoder that cross-attends to a memory (a decoder-only LM reads the modalities themselves)."""
        return self.decoder is not None and self.decoder.reads_memory

    def _memory(self, outputs: dict[str, EncoderOutput], fused: FusionOutput | None) -> EncoderOutput:
        """The decoder's memory: the modalities' tokens behind their markers, the fused sequence, or the
        fused vector alone."""
        if self.memory == "pooled":  # the fusion's one vector: the decoder reads it as a classifier head would
            if fused is None:
                raise ValueError("memory: 'pooled' is the fusion's vector, but the backbone ran without its fusion")
            mask = torch.ones(fused.pooled.shape[0], 1, dtype=torch.bool, device=fused.pooled.device)
            return EncoderOutput(tokens=fused.pooled[:, None], mask=mask, pooled=fused.pooled)
        if self.memory == "fused":
            if fused is None or fused.tokens is None:
                raise ValueError(f"memory: 'fused' reads the fusion's token sequence, but the {type(self.fusion).__name__} "
                                 f"fusion gives none here (only a pooled vector): use memory: modalities")
            # the fused vector first, then the fused tokens: a positional readout's vector knows *where*
            # things are, which attention over the tokens by content does not learn (see the VQA recipe)
            tokens = torch.cat([fused.pooled[:, None], fused.tokens], dim=1)  # (B, 1 + N, D)
            mask = torch.cat([fused.mask.new_ones(fused.mask.shape[0], 1), fused.mask], dim=1)
            return EncoderOutput(tokens=tokens, mask=mask, pooled=fused.pooled)
        parts = [self.memory_markers(name, outputs[name].tokens, outputs[name].mask) for name in sorted(outputs)]
        tokens = torch.cat([t for t, _ in parts], dim=1)  # (B, sum of (N_m + 1), D)
        mask = torch.cat([m for _, m in parts], dim=1)
        return EncoderOutput(tokens=tokens, mask=mask, pooled=tokens[:, 0])
