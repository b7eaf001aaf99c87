"""A trained modality tokenizer as a language model's encoder: `model.encoders.image: {type: tokenizer,
path: RUN}` reads the run that `configs/tokenizer-image.yaml` trained, its encoder and its pixel decoder,
frozen. The language model then reads and writes the tokenizer's codes (docs/concepts.md#tokenizers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..data.processor import Processor
from ..errors import ConfigError, PolymodalError
from ..runfolder import model_folder


def trained_tokenizer(name: str, spec: dict[str, Any], width: int, where: str) -> tuple[nn.Module, Processor]:
    """The encoder of modality `name` from the tokenizer run `spec["path"]`, with the run's pixel decoder
    and processor; its tokens must have the language model's width `width` (the run's `model.width`)."""
    from . import load_system  # (the package's loader: this module is part of it)
    from ..tasks.reconstruction import ReconstructionTask

    extra = sorted(set(spec) - {"type", "path"})
    if extra:
        raise ConfigError(f"{where}.{extra[0]}: a trained tokenizer (path: RUN) takes its settings from the run; "
                          "give only type and path")
    folder = Path(spec["path"])
    try:
        source = model_folder(folder)
    except PolymodalError as error:
        raise ConfigError(f"{where}.path: no trained tokenizer there ({error}); train one first: "
                          f"polymodal train configs/tokenizer-{name}.yaml --out RUN") from None
    system = load_system(folder)
    encoder = system.model.backbone.encoders[name] if name in system.model.backbone.encoders else None
    heads = [t for t in system.model.tasks.values() if isinstance(t, ReconstructionTask)]
    if encoder is None or not hasattr(encoder, "freeze_with_decoder") or not heads:
        raise ConfigError(f"{where}.path: the run at {folder} is not a {name} tokenizer (it needs a {name} "
                          f"encoder of type tokenizer and a reconstruction task)")
    if encoder.proj.out_features != width:
        raise ConfigError(f"{where}: the tokenizer at {folder} gives tokens of width {encoder.proj.out_features}; "
                          f"set model.width: {encoder.proj.out_features} (the language model's own width is "
                          f"model.decoder.width)")
    encoder.freeze_with_decoder(heads[0].decoder)
    encoder.source = source  # the model folder a saved run copies (`System.save_artifacts`)
    return encoder, system.processors[name]
