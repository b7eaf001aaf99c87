"""One modality's encoder and the processor that feeds it, from `model.encoders.<modality>`."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from ..config import bind
from ..data.processor import Processor
from ..errors import ConfigError
from ..modalities.base import HoldsEncoders
from ..modalities.registry import MODALITIES, PROCESSORS, Modality, make_processor, with_defaults
from ..modalities.text.tokenizer import TextTokenizer
from .errors import config_errors
from .trained_tokenizer import trained_tokenizer


def modality(name: str, where: str) -> Modality:
    """The registered modality `name`, or a ConfigError naming the known ones."""
    if name not in MODALITIES:
        raise ConfigError(f"{where}: unknown modality {name!r}; known: {', '.join(sorted(MODALITIES))}")
    return MODALITIES[name]


def keywords(cls: type) -> set[str]:
    """The keyword parameters of `cls`'s constructor."""
    return {name for name, p in inspect.signature(cls).parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def encoder_class(name: str, spec: Any, where: str, usable: dict[str, type] | None = None) -> type:
    """The encoder class `spec["type"]` names among `usable` (default: every encoder of modality `name`)."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping with a type, got {spec!r}")
    usable = modality(name, where).encoders if usable is None else usable
    kind = spec.get("type")
    if kind not in usable:
        raise ConfigError(f"{where}.type: expected one of {', '.join(sorted(usable))}, got {kind!r}")
    return usable[kind]


def build_encoder(name: str, spec: Any, width: int, tokenizer: TextTokenizer | None,
                  augment: bool) -> tuple[nn.Module, Processor]:
    """The encoder `model.encoders.<name>` describes (output width `width`) and its processor."""
    where = f"model.encoders.{name}"
    cls, kind = encoder_class(name, spec or {}, where), modality(name, where)
    if getattr(cls, "loads_run", False) and spec.get("path") is not None:  # a trained tokenizer, frozen
        return trained_tokenizer(name, spec, width, where)
    spec = {k: v for k, v in (spec or {}).items() if k != "type"}
    options = {key: spec.pop(key, default) for key, default in kind.processor_options.items()}
    nested = cls.nested_encoders() if issubclass(cls, HoldsEncoders) else {}
    nested_specs = {key: spec.pop(key, default) for key, (_, default) in nested.items()}
    settings = bind(cls, spec, where, provided=(*kind.builder_provides, *nested),
                    elsewhere=(*kind.processor_options, *nested))
    provided: dict[str, Any] = {"out_dim": width}
    if tokenizer is not None and "vocab_size" in keywords(cls):
        provided.update(vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id)
    complete = with_defaults(cls, {**settings, **provided})
    inner = {key: _nested_encoder(nested[key][0], value, f"{where}.{key}", cls.nested_settings(key, **complete))
             for key, value in nested_specs.items() if value is not None}
    with config_errors(where):  # encoders and processors check their settings' consistency (sizes that divide, ...)
        encoder = cls(**settings, **provided, **inner)
        processor = make_processor(kind, cls, {**with_defaults(cls, settings), **nested_specs, **options}, augment,
                                   tokenizer)
    return encoder, processor


def _nested_encoder(name: str, spec: Any, where: str, provided: dict[str, Any]) -> nn.Module:
    """An encoder inside another one (a video encoder's frame encoder), from its config mapping; only
    encoders that read the modality's usual tensors (the outer encoder's processor makes them) and that
    are not whole models of their own (`standalone`: a tokenizer's encoder)."""
    usable = {k: c for k, c in modality(name, where).encoders.items()
              if c not in PROCESSORS and not getattr(c, "standalone", False)}
    cls = encoder_class(name, spec, where, usable)
    settings = bind(cls, {k: v for k, v in spec.items() if k != "type"}, where, provided=tuple(provided))
    with config_errors(where):
        return cls(**settings, **provided)
