"""The one place a modality is declared: its encoders and how a record value becomes a batch tensor.

Adding a modality = one module with its processor and encoders + one `Modality` entry here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch
from torch import nn

from ..errors import ConfigError
from .image.encoders import CNNImageEncoder, ViTImageEncoder
from .image.processor import ImageProcessor
from .text.encoder import TextEncoder
from .text.recurrent import RecurrentTextEncoder
from .text.tokenizer import TextTokenizer


class Processor(Protocol):
    """Turns record values into encoder inputs: `prepare` per example (in loader workers), `collate` per batch."""

    def prepare(self, value: Any, generator: torch.Generator | None) -> Any: ...

    def collate(self, items: list[Any]) -> dict[str, torch.Tensor]: ...


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


class ImageBatchProcessor:
    """Image paths → normalised (B, 3, S, S) tensors, optionally augmented."""

    def __init__(self, image_size: int, augment: bool):
        self.processor = ImageProcessor(image_size=image_size, augment=augment)

    def prepare(self, value: str, generator: torch.Generator | None) -> torch.Tensor:
        return self.processor(value, generator)

    def collate(self, items: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"data": torch.stack(items)}


@dataclass(frozen=True)
class Modality:
    """A modality: its encoder classes by config `type`, and how to make its processor.

    `make_processor(encoder_kwargs, augment, tokenizer)` builds the processor that matches an encoder.
    `builder_provides` are encoder arguments the builder fills (never from the config).
    """

    name: str
    encoders: dict[str, type[nn.Module]]
    make_processor: Callable[[dict[str, Any], bool, TextTokenizer | None], Processor]
    builder_provides: tuple[str, ...] = ("out_dim",)


def _image_processor(kwargs: dict[str, Any], augment: bool, tokenizer: TextTokenizer | None) -> Processor:
    return ImageBatchProcessor(kwargs.get("image_size", 64), augment)


def _text_processor(kwargs: dict[str, Any], augment: bool, tokenizer: TextTokenizer | None) -> Processor:
    assert tokenizer is not None, "the builder makes the tokenizer before text processors"
    return TextProcessor(tokenizer, kwargs.get("max_length", 64))


MODALITIES: dict[str, Modality] = {
    "image": Modality("image", {"cnn": CNNImageEncoder, "vit": ViTImageEncoder}, _image_processor),
    "text": Modality("text", {"transformer": TextEncoder, "gru": RecurrentTextEncoder}, _text_processor,
                     builder_provides=("out_dim", "vocab_size", "pad_id")),
}


def get_modality(name: str, where: str) -> Modality:
    """The registered modality `name`, or a ConfigError naming the known ones."""
    if name not in MODALITIES:
        raise ConfigError(f"{where}: unknown modality {name!r}; known: {', '.join(sorted(MODALITIES))}")
    return MODALITIES[name]
