"""Run each modality encoder on its part of the batch, in sorted modality order."""

from __future__ import annotations

import torch
from torch import nn

from ..modalities.base import EncoderOutput
from .absent import AbsentModalities


def encode_all(encoders: nn.ModuleDict, inputs: dict[str, dict[str, torch.Tensor]],
               absent: AbsentModalities) -> dict[str, EncoderOutput]:
    """Encode every modality present in `inputs` (a model may be given a subset of its modalities).

    Args:
        encoders: modality name → encoder.
        inputs: modality name → {"data": tensor, "mask": optional (B, N) bool, "present": optional (B,) bool,
            other encoder inputs by name}. Without "data" the modality is absent from every example.
        absent: the placeholders for examples that lack a modality.
    """
    outputs = {}
    for name in sorted(inputs):
        if name not in encoders:
            raise KeyError(f"this model has no {name!r} encoder; it has: {', '.join(sorted(encoders))}")
        part = dict(inputs[name])
        present = part.pop("present", None)
        if "data" not in part:
            outputs[name] = absent.alone(name, present.shape[0], present.device)
            continue
        data = part.pop("data")
        out = encoders[name](data, **part)  # mask, and e.g. a video's audio track, by keyword
        outputs[name] = out if present is None else absent.fill(name, out, present)
    return outputs
