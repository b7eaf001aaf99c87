"""Run each modality encoder on its part of the batch, in sorted modality order."""

from __future__ import annotations

import torch
from torch import nn

from ..modalities.base import EncoderOutput


def encode_all(encoders: nn.ModuleDict, inputs: dict[str, dict[str, torch.Tensor]]) -> dict[str, EncoderOutput]:
    """Encode every modality present in `inputs` (a model may be given a subset of its modalities).

    Args:
        encoders: modality name → encoder.
        inputs: modality name → {"data": tensor, "mask": optional (B, N) bool, other encoder inputs by name}.
    """
    outputs = {}
    for name in sorted(inputs):
        if name not in encoders:
            raise KeyError(f"this model has no {name!r} encoder; it has: {', '.join(sorted(encoders))}")
        part = dict(inputs[name])
        data = part.pop("data")
        outputs[name] = encoders[name](data, **part)  # mask, and e.g. a video's audio track, by keyword
    return outputs
