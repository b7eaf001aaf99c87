"""What every joint model returns to the task heads."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..modalities.base import EncoderOutput


@dataclass
class ModelOutput:
    """A model's view of a batch.

    Attributes:
        modalities: each modality's `EncoderOutput`.
        pooled: (B, D) one fused vector per example (what classification / VQA heads read); None when
            the model was asked not to fuse.
        fused: the joint token sequence (B, N, D) + mask, for models that build one.
        embeddings: L2-normalised (B, E) per modality, for models with a shared embedding space.
        logit_scale: the contrastive temperature's inverse (a scalar), where the model learns one.
        streams: per-modality token streams after their interaction, from multi-stream fusions.
        scored, score_weights: score-level fusion's per-modality vectors and their weights (`FusionOutput`);
            heads read them through `tasks.base.head_scores`.
        memory: what a text decoder cross-attends to (every modality's tokens, or the fusion's), in
            models with a decoder.

    It holds tensors only: a head that needs a part of the model (its decoder, its fusion, an encoder)
    is given that part when it is built (`tasks.base.Borrowed`).
    """

    modalities: dict[str, EncoderOutput]
    pooled: torch.Tensor | None
    fused: EncoderOutput | None = None
    embeddings: dict[str, torch.Tensor] = field(default_factory=dict)
    logit_scale: torch.Tensor | None = None
    streams: dict[str, EncoderOutput] = field(default_factory=dict)
    scored: dict[str, torch.Tensor] = field(default_factory=dict)
    score_weights: dict[str, torch.Tensor] = field(default_factory=dict)
    memory: EncoderOutput | None = None
