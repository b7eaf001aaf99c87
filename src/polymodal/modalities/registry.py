"""The one place a modality is declared: its encoders and how a record value becomes a batch tensor.

Adding a modality = one module with its processor and encoders + one `Modality` entry here.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ..data.processor import Processor
from .audio.encoders import ConvAudioEncoder, SpectrogramTransformer
from .audio.processor import AudioProcessor
from .audio.speech import SpeechEncoder
from .audio.tokenizer import QuantizedAudioEncoder
from .image.encoders import CNNImageEncoder, ViTImageEncoder
from .image.tokenizer import QuantizedImageEncoder, QuantizedVideoEncoder
from .image.processor import ImageProcessor
from .pretrained import (HFAudioBatchProcessor, HFAudioEncoder, HFImageBatchProcessor, HFImageEncoder,
                         HFTextEncoder)
from .text.encoder import TextEncoder
from .text.recurrent import RecurrentTextEncoder
from .text.tokenizer import TextTokenizer
from .video.encoders import Conv3DEncoder, FrameEncoder, TubeletViT
from .video.processor import VideoProcessor


class TextProcessor:
    """Strings → token ids + mask (tokenised per batch, padded to the longest)."""

    def __init__(self, tokenizer: TextTokenizer, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length

    def prepare(self, value: str, generator: torch.Generator | None) -> str:
        return value

    def collate(self, items: list[str]) -> dict[str, torch.Tensor]:
        ids, mask = self.tokenizer.encode_batch(items, self.max_length)
        return {"data": ids, "mask": mask}


class VideoBatchProcessor:
    """Video paths → (B, T, 3, S, S) clips, plus (B, samples) of each file's audio track when the encoder
    fuses sound (`audio` in its config)."""

    def __init__(self, video: VideoProcessor, audio: AudioProcessor | None):
        self.video, self.audio = video, audio

    def prepare(self, value: str, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.video(value, generator), (self.audio(value, generator) if self.audio is not None else None)

    def collate(self, items: list[tuple[torch.Tensor, torch.Tensor | None]]) -> dict[str, torch.Tensor]:
        batch = {"data": torch.stack([video for video, _ in items])}
        if self.audio is not None:
            batch["audio"] = torch.stack([audio for _, audio in items])
        return batch


class AudioBatchProcessor:
    """Audio (or video) paths → (B, samples) mono waveforms."""

    def __init__(self, audio: AudioProcessor):
        self.audio = audio

    def prepare(self, value: str, generator: torch.Generator | None) -> torch.Tensor:
        return self.audio(value, generator)

    def collate(self, items: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"data": torch.stack(items)}


class ImageBatchProcessor:
    """Image paths → normalised (B, 3, S, S) tensors, optionally augmented."""

    def __init__(self, image_size: int, augment: bool, cache_mb: int = 0):
        self.processor = ImageProcessor(image_size=image_size, augment=augment, cache_mb=cache_mb)

    def prepare(self, value: str, generator: torch.Generator | None) -> torch.Tensor:
        return self.processor(value, generator)

    def collate(self, items: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"data": torch.stack(items)}


@dataclass(frozen=True)
class Modality:
    """A modality: its encoder classes by config `type`, and how to make its processor.

    `make_processor(settings, augment, tokenizer)` builds the processor that matches an encoder, from
    the encoder's arguments (its defaults filled in: `with_defaults`) plus the `processor_options`.
    `builder_provides` are encoder arguments the builder fills (never from the config).
    `processor_options` are config keys (with their defaults) that only the processor reads, such as
    how frames are sampled; they sit beside the encoder's keys in `model.encoders.<modality>`.
    """

    name: str
    encoders: dict[str, type[nn.Module]]
    make_processor: Callable[[dict[str, Any], bool, TextTokenizer | None], Processor]
    builder_provides: tuple[str, ...] = ("out_dim",)
    processor_options: dict[str, Any] = field(default_factory=dict)


def with_defaults(encoder: type[nn.Module], settings: dict[str, Any]) -> dict[str, Any]:
    """`settings` completed with the encoder's own defaults, so a processor reads the sizes the encoder
    was built with and never a default of its own that could disagree."""
    defaults = {name: p.default for name, p in inspect.signature(encoder).parameters.items()
                if p.default is not inspect.Parameter.empty}
    return {**defaults, **settings}


def _image_processor(settings: dict[str, Any], augment: bool, tokenizer: TextTokenizer | None) -> Processor:
    return ImageBatchProcessor(settings["image_size"], augment, _cache_mb(settings))


def _audio_settings(settings: dict[str, Any]) -> dict[str, Any]:
    return {"sample_rate": settings["sample_rate"], "duration": settings["duration"]}


def _cache_mb(settings: dict[str, Any]) -> int:
    value = settings.get("cache_mb", 1024)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"cache_mb: expected a whole number of MiB (0: no cache), got {value!r}")
    return value


def _video_processor(settings: dict[str, Any], augment: bool, tokenizer: TextTokenizer | None) -> Processor:
    cache_mb = _cache_mb(settings)
    video = VideoProcessor(image_size=settings["image_size"], num_frames=settings["num_frames"],
                           fps=settings["fps"], sampling=settings["sampling"], augment=augment, cache_mb=cache_mb)
    track = settings.get("audio")  # the sound-track encoder's config, when the video encoder fuses sound
    audio = None
    if track is not None:
        track_encoder = MODALITIES["audio"].encoders[track["type"]]  # checked when the encoder was built
        audio = AudioProcessor(**_audio_settings(with_defaults(track_encoder, track)), augment=augment,
                               cache_mb=cache_mb)
    return VideoBatchProcessor(video, audio)


def _audio_processor(settings: dict[str, Any], augment: bool, tokenizer: TextTokenizer | None) -> Processor:
    return AudioBatchProcessor(AudioProcessor(**_audio_settings(settings), augment=augment,
                                              cache_mb=_cache_mb(settings)))


def _text_processor(kwargs: dict[str, Any], augment: bool, tokenizer: TextTokenizer | None) -> Processor:
    assert tokenizer is not None, "the builder makes the tokenizer before text processors"
    return TextProcessor(tokenizer, kwargs["max_length"])


def _hf_image_processor(settings: dict[str, Any], augment: bool, tokenizer: TextTokenizer | None) -> Processor:
    return HFImageBatchProcessor(settings["path"], _cache_mb(settings))


def _hf_audio_processor(settings: dict[str, Any], augment: bool, tokenizer: TextTokenizer | None) -> Processor:
    return HFAudioBatchProcessor(settings["path"], settings["duration"], augment,
                                 _cache_mb(settings))


# the processor of an encoder type whose input is not its modality's usual tensor (a pretrained model's
# own preprocessing); every other type uses its modality's `make_processor`
PROCESSORS: dict[type[nn.Module], Callable[[dict[str, Any], bool, TextTokenizer | None], Processor]] = {
    HFImageEncoder: _hf_image_processor,
    HFAudioEncoder: _hf_audio_processor,
}

MODALITIES: dict[str, Modality] = {
    "image": Modality("image", {"cnn": CNNImageEncoder, "vit": ViTImageEncoder, "hf": HFImageEncoder,
                                "tokenizer": QuantizedImageEncoder},
                      _image_processor, processor_options={"cache_mb": 1024}),
    "text": Modality("text", {"transformer": TextEncoder, "gru": RecurrentTextEncoder, "hf": HFTextEncoder},
                     _text_processor, builder_provides=("out_dim", "vocab_size", "pad_id")),
    "video": Modality("video", {"tubelet_vit": TubeletViT, "conv3d": Conv3DEncoder, "frames": FrameEncoder,
                                "tokenizer": QuantizedVideoEncoder},
                      _video_processor, processor_options={"fps": None, "sampling": "uniform", "cache_mb": 1024}),
    "audio": Modality("audio", {"spectrogram": SpectrogramTransformer, "conv": ConvAudioEncoder, "speech": SpeechEncoder,
                                "hf": HFAudioEncoder, "tokenizer": QuantizedAudioEncoder}, _audio_processor, processor_options={"cache_mb": 1024}),
}


def make_processor(modality: Modality, encoder: type[nn.Module], settings: dict[str, Any], augment: bool,
                   tokenizer: TextTokenizer | None) -> Processor:
    """The processor that feeds `encoder` (of `modality`), from its settings (defaults filled in)."""
    return PROCESSORS.get(encoder, modality.make_processor)(settings, augment, tokenizer)
