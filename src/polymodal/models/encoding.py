"""Run each modality encoder on its part of the batch, in sorted modality order."""

from __future__ import annotations

import inspect
from functools import lru_cache

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
        required, optional = encoder_inputs(type(encoders[name]))
        unknown, missing = sorted(set(part) - set(required) - set(optional)), sorted(set(required) - set(part))
        if unknown or missing:
            raise ValueError(f"the {name} encoder ({type(encoders[name]).__name__}) takes the data and "
                             f"{', '.join([*required, *optional]) or 'nothing else'}; the batch "
                             + (f"gives {', '.join(unknown)}" if unknown else f"lacks {', '.join(missing)}"))
        out = encoders[name](data, **part)  # its declared inputs: a text mask, a video's audio track
        outputs[name] = out if present is None else absent.fill(name, out, present)
    return outputs


@lru_cache(maxsize=None)
def encoder_inputs(encoder: type) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The inputs an encoder's `forward` takes besides its data: (required, optional) names."""
    params = list(inspect.signature(encoder.forward).parameters.values())[2:]  # past self and the data
    return (tuple(p.name for p in params if p.default is inspect.Parameter.empty),
            tuple(p.name for p in params if p.default is not inspect.Parameter.empty))
