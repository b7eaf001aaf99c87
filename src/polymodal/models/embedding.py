"""A shared embedding space over per-modality pooled vectors (CLIP's projections and learnt temperature).

The dual encoder always has one; the joint transformer has one when `embed_dim` is set, so that
contrastive tasks align the modality encoders before the joint layers fuse them (ALBEF's "align before
fuse"). Both keep the weights under the same names (`projections.<modality>`, `logit_scale`), so
`train.init_from` carries a space from one model type to the other.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..modalities.base import EncoderOutput

MAX_LOGIT_SCALE = math.log(100.0)  # OpenCLIP clamps the learnt temperature at 1/100


PROJECTION_INITS = ("default", "identity")


def projections(names: list[str], width: int, embed_dim: int, init: str = "default") -> nn.ModuleDict:
    """One bias-free linear map per modality, D → E: nn.Linear's own initialisation, or (`init:
    "identity"`, D = E) the identity, so the space starts as the encoders' pooled vectors themselves (a
    pretrained encoder's own sentence space, a student cut from its teacher).

    Raises:
        ValueError: an unknown `init`, or "identity" with D ≠ E.
    """
    if init not in PROJECTION_INITS:
        raise ValueError(f"projection_init: expected one of {', '.join(PROJECTION_INITS)}, got {init!r}")
    if init == "identity" and width != embed_dim:
        raise ValueError(f"projection_init: 'identity' needs embed_dim equal to width ({width}), got {embed_dim}")
    maps = nn.ModuleDict({name: nn.Linear(width, embed_dim, bias=False) for name in names})
    if init == "identity":
        with torch.no_grad():
            for linear in maps.values():
                linear.weight.copy_(torch.eye(width))
    return maps


def logit_scale(init_temperature: float) -> nn.Parameter:
    """log(1 / temperature), learnt."""
    return nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))


def embed(maps: nn.ModuleDict, scale: nn.Parameter,
          outputs: dict[str, EncoderOutput]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """L2-normalised (B, E) embeddings of every encoded modality, and the clamped logit scale."""
    embeddings = {name: F.normalize(maps[name](out.pooled), dim=-1) for name, out in outputs.items()}
    return embeddings, scale.clamp(0, MAX_LOGIT_SCALE).exp()
