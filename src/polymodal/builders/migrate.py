"""Configs of earlier versions in today's terms, in one step before building, so the builder has one path.

- Polymodal 0.1's `model.type` (`joint_transformer`, `dual_encoder`) is the one composition with a fusion:
  its fusion settings sat beside the model's and move under `model.fusion`.
- Fusion types renamed in 0.3, so that two strategies are not both called "gated": `gated` (Flamingo's
  gated cross-attention) is `gated_cross_attention`, `gmu` (the gated multimodal unit's gated sum) is
  `gated_sum`.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

from ..config import Config
from ..errors import ConfigError
from ..fusion import FUSIONS
from ..models import Backbone

MODEL_ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
    "joint_transformer": ("early", {}),
    "dual_encoder": ("late", {"embed_dim": 128}),
}
FUSION_ALIASES = {"gated": "gated_cross_attention", "gmu": "gated_sum"}
MODEL_SECTIONS = ("encoders", "tokenizer", "decoder")  # keys of `model` that are neither fusion nor backbone


def fusion_name(name: Any) -> Any:
    """Today's name of a fusion type (an old name's new one; anything else as it is)."""
    return FUSION_ALIASES.get(name, name) if isinstance(name, str) else name


def migrate(config: Config) -> Config:
    """A copy of `config` with its `model` section in today's terms (the same values where nothing changed)."""
    config = copy.deepcopy(config)
    if "type" in config.model:
        config.model = _from_model_type(config.model)
    fusion = config.model.get("fusion")
    if isinstance(fusion, dict) and "type" in fusion:
        fusion["type"] = fusion_name(fusion["type"])
    return config


def _from_model_type(model: dict[str, Any]) -> dict[str, Any]:
    """A 0.1 model section (`type` with its fusion's keys beside the model's) with a `fusion` mapping."""
    model_type = model.pop("type")
    if model_type not in MODEL_ALIASES:
        raise ConfigError(f"model.type: expected one of {', '.join(sorted(MODEL_ALIASES))}, got {model_type!r} "
                          f"(or leave model.type out and choose model.fusion)")
    if "fusion" in model:
        raise ConfigError(f"model.fusion: model.type {model_type!r} already chooses the fusion; give one of the two")
    fusion_type, defaults = MODEL_ALIASES[model_type]
    fusion_keys = set(inspect.signature(FUSIONS[fusion_type]).parameters) - {"modalities", "width"}
    model_keys = set(inspect.signature(Backbone).parameters) - {"encoders", "fusion", "decoder", "memory"}
    unknown = sorted(set(model) - fusion_keys - model_keys - set(MODEL_SECTIONS))
    if unknown:
        allowed = ", ".join(sorted(fusion_keys | model_keys | {*MODEL_SECTIONS, "type"}))
        raise ConfigError(f"model: unknown key {unknown[0]!r} for model.type {model_type!r}; allowed keys: {allowed}")
    fusion = {"type": fusion_type, **{k: v for k, v in model.items() if k in fusion_keys}}
    rest = {k: v for k, v in model.items() if k not in fusion_keys}
    return {**defaults, **rest, "fusion": fusion}
