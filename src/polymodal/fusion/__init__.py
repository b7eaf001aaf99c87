"""Fusion strategies (docs/concepts.md#fusion): each takes every modality's `EncoderOutput` and returns a
`FusionOutput`.

A new strategy is one file here plus one entry in `FUSIONS`; `model.fusion: {type: <name>, ...}` selects
it, and the fusion contract tests cover it from then on.
"""

from .base import FusionOutput
from .coattention import CoAttentionFusion
from .cross import CrossAttentionFusion
from .early import EarlyFusion
from .gated import GatedCrossAttentionFusion
from .gmu import GatedSumFusion
from .late import LateFusion
from .perceiver import PerceiverFusion

FUSIONS = {
    "early": EarlyFusion,  # one stream: [CLS; m_1; X^(1); ...] through a joint transformer
    "late": LateFusion,  # pooled vectors combined at the top
    "gated_sum": GatedSumFusion,  # pooled vectors in a learned, per-example gated sum (Gated Multimodal Unit)
    "cross": CrossAttentionFusion,  # a stream per modality, bidirectional cross-attention at chosen layers
    "coattn": CoAttentionFusion,  # two streams, ViLBERT co-attention blocks
    "gated_cross_attention": GatedCrossAttentionFusion,  # one stream reads the others through tanh gates (Flamingo)
    "perceiver": PerceiverFusion,  # a latent array reads every modality (modality-agnostic)
}

__all__ = ["CoAttentionFusion", "CrossAttentionFusion", "EarlyFusion", "FUSIONS", "FusionOutput",
           "GatedCrossAttentionFusion", "GatedSumFusion", "LateFusion", "PerceiverFusion"]
