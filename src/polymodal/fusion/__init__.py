"""Fusion strategies (seed §2.2): each takes every modality's `EncoderOutput` and returns a `FusionOutput`.

A new strategy is one file here plus one entry in `FUSIONS`; `model.fusion: {type: <name>, ...}` selects
it, and the fusion contract tests cover it from then on.
"""

from .base import FusionOutput
from .early import EarlyFusion
from .late import LateFusion

FUSIONS = {"early": EarlyFusion, "late": LateFusion}

__all__ = ["EarlyFusion", "FUSIONS", "FusionOutput", "LateFusion"]
