"""A trained modality tokenizer as a language model's encoder: `model.encoders.image: {type: tokenizer,
path: RUN}` reads the run that `configs/tokenizer-image.yaml` trained, its encoder and its pixel decoder,
frozen. The language model then reads and writes the tokenizer's codes (docs/concepts.md#tokenizers).

`model.encoders.video: {type: tokenizer, path: IMAGE_RUN, num_frames: T}` reads an image tokenizer's run as
a video tokenizer by per-frame codes (Chameleon's way): the same weights code each of a clip's T frames."""

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

    folder = Path(spec["path"])
    try:
        source = model_folder(folder)
    except PolymodalError as error:
        raise ConfigError(f"{where}.path: no trained tokenizer there ({error}); train one first: "
                          f"polymodal train configs/tokenizer-{name}.yaml --out RUN") from None
    system = load_system(folder)
    encoders = dict(system.model.backbone.encoders)
    per_frame = name == "video" and "video" not in encoders and hasattr(encoders.get("image"), "freeze_with_decoder")
    allowed = {"type", "path", "num_frames"} if name == "video" else {"type", "path"}
    extra = sorted(set(spec) - allowed)
    if extra:
        raise ConfigError(f"{where}.{extra[0]}: a trained tokenizer (path: RUN) takes its settings from the run; "
                          f"give only {', '.join(sorted(allowed))}")
    encoder = encoders.get("image" if per_frame else name)
    heads = [t for t in system.model.tasks.values() if isinstance(t, ReconstructionTask)]
    if encoder is None or not hasattr(encoder, "freeze_with_decoder") or not heads:
        frames = " (or, for video, an image tokenizer's run: per-frame codes)" if name == "video" else ""
        raise ConfigError(f"{where}.path: the run at {folder} is not a {name} tokenizer{frames} (it needs a {name} "
                          f"encoder of type tokenizer and a reconstruction task)")
    decoder = heads[0].decoder
    if per_frame:
        encoder, decoder, processor = _per_frame(encoder, decoder, folder, spec.get("num_frames", 4))
    else:
        processor = system.processors[name]
        if spec.get("num_frames", getattr(encoder, "num_frames", None)) != getattr(encoder, "num_frames", None):
            raise ConfigError(f"{where}.num_frames: the video tokenizer at {folder} codes clips of "
                              f"{encoder.num_frames} frames, got {spec['num_frames']}")
    if encoder.proj.out_features != width:
        raise ConfigError(f"{where}: the tokenizer at {folder} gives tokens of width {encoder.proj.out_features}; "
                          f"set model.width: {encoder.proj.out_features} (the language model's own width is "
                          f"model.decoder.width)")
    encoder.freeze_with_decoder(decoder)
    encoder.source = source  # the model folder a saved run copies (`System.save_artifacts`)
    return encoder, processor


def _per_frame(image: nn.Module, decoder: nn.Module, folder: Path,
               num_frames: Any) -> tuple[nn.Module, nn.Module, Processor]:
    """The video tokenizer that codes each of `num_frames` frames with the image tokenizer `image` (its
    weights), its pixel decoder run on each frame, and a video processor sampling frames of its size."""
    from ..config import load_config
    from ..modalities.image.tokenizer import FrameDecoder, QuantizedVideoEncoder
    from ..modalities.registry import MODALITIES, make_processor, with_defaults
    from ..runfolder import CONFIG
    from .errors import config_errors

    skip = ("type", "path", *MODALITIES["image"].processor_options)
    settings = {k: v for k, v in load_config(folder / CONFIG).model["encoders"]["image"].items() if k not in skip}
    settings["num_frames"] = num_frames
    kind = MODALITIES["video"]
    with config_errors("model.encoders.video"):
        encoder = QuantizedVideoEncoder(out_dim=image.proj.out_features, **settings)
        processor = make_processor(kind, QuantizedVideoEncoder,
                                   {**with_defaults(QuantizedVideoEncoder, settings), **kind.processor_options},
                                   False, None)
    encoder.load_state_dict(image.state_dict())
    return encoder, FrameDecoder(decoder, encoder.num_frames), processor
