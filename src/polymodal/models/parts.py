"""What task heads borrow from the backbone, as protocols: a text decoder (generative tasks)."""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from .output import ModelOutput


@runtime_checkable
class Decoder(Protocol):
    """A text decoder over a model output: ours (`TextDecoder`, cross-attending to `ModelOutput.memory`) or
    a decoder-only LM reading the modalities in its sequence (`MultimodalLM`)."""

    reads_memory: ClassVar[bool]  # True: it cross-attends to `ModelOutput.memory`, which the backbone builds
    max_length: int  # the most positions (prompt, media and generated tokens together)

    def next_logits(self, out: ModelOutput, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L, V): at each position of right-padded ids, the logits of the id after it."""
        ...

    def start(self, out: ModelOutput, repeat: int = 1) -> Any:
        """A decoding session (`prefill`, `step`, `reorder`) over `out`, each row repeated `repeat` times."""
        ...
