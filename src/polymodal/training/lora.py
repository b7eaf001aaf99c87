"""LoRA fine-tuning through `peft` on any of the model's linear or convolution layers (`train.lora`).

`targets` are regular expressions, each matched against the whole module name as `model.named_modules()`
gives it, with or without the leading `backbone.` (`encoders\\.image\\..*`, `.*fusion.*\\.(qkv|out)`); the
matching `nn.Linear` and `nn.Conv1d/2d/3d` layers (a CNN image encoder's too) get adapters (peft's `inject_adapter_in_model`, given their exact names). Every
other weight is frozen, except the task heads (`tasks.*`: a new head must train) and the prefixes of
`train`. A Hugging Face model nested in an encoder is adapted the same way. Checkpoints keep the adapters
(a resumed run goes on exactly); the exported weights are merged, W + (α/r)·B·A, under the names of the
model without LoRA, so loading, evaluating and serving need no peft.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .optim import under_prefix


ADAPTABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)  # the layer types peft's LoRA adapts


def lora_targets(model: nn.Module, patterns: list[str]) -> list[str]:
    """The names of the linear and convolution modules whose name matches one of `patterns` (whole-name
    regex match, with or without `backbone.`)."""
    try:
        regex = re.compile(r"(?:backbone\.)?(?:" + "|".join(f"(?:{p})" for p in patterns) + ")")
    except re.error as e:
        raise ConfigError(f"train.lora.targets: not a regular expression: {e}") from None
    linear = [n for n, m in model.named_modules() if isinstance(m, ADAPTABLE)]
    names = [n for n in linear if regex.fullmatch(n)]
    if not names:
        shown = sorted({re.sub(r"\.\d+\.", ".N.", n) for n in linear})
        raise ConfigError(f"train.lora.targets: {patterns} match no linear or convolution layer; the model's: "
                          f"{', '.join(shown)}")
    return names


ADAPTER = "finetune"  # the adapters' name: an encoder's own LoRA (`model.encoders.X.lora`) is peft's "default"


def add_lora(model: nn.Module, spec: dict[str, Any]) -> list[str]:
    """Put adapters on `spec["targets"]`'s layers and freeze what LoRA leaves fixed; returns the adapted names."""
    from peft import LoraConfig, inject_adapter_in_model

    names = lora_targets(model, spec["targets"])
    config = LoraConfig(r=spec.get("r", 8), lora_alpha=spec.get("alpha", 16.0), lora_dropout=spec.get("dropout", 0.0),
                        target_modules=names)
    inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    params = [n for n, _ in model.named_parameters()]
    trained = {n for n in params if ".lora_" in n or n.startswith("tasks.")}
    for prefix in spec.get("train", []):
        trained.update(under_prefix(params, prefix, "train.lora.train"))
    for name, p in model.named_parameters():
        p.requires_grad_(name in trained)
    return names


def adapted_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Name → layer, for the layers `add_lora` gave adapters."""
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer) and ADAPTER in m.lora_A}


def merged_state_dict(model: nn.Module, state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The model's weights with `add_lora`'s adapters folded into their layers, keyed as without them (the
    same as `model.state_dict()` when there are none). `state`: the model's state dict when it is not
    `model.state_dict()` (the whole weights of a sharded model, gathered); the adapters' own weights are
    read from their layers."""
    adapted = adapted_layers(model)
    state = model.state_dict() if state is None else state
    if not adapted:
        return state
    out = {}
    for key, value in state.items():
        layer = next((n for n in adapted if key.startswith(f"{n}.")), None)
        if layer is None:
            out[key] = value
        elif key.startswith(f"{layer}.base_layer."):
            out[layer + "." + key[len(f"{layer}.base_layer."):]] = value
    with torch.no_grad():
        for name, layer in adapted.items():
            base = state[f"{name}.base_layer.weight"]
            out[f"{name}.weight"] = base + layer.get_delta_weight(ADAPTER).to(base.device)
    return out
