"""What a modality's processor is to the data side: the loader calls it, `modalities/` implements it."""

from __future__ import annotations

from typing import Any, Protocol

import torch


class Processor(Protocol):
    """Turns record values into encoder inputs: `prepare` per example (in loader workers), `collate` per batch."""

    def prepare(self, value: Any, generator: torch.Generator | None) -> Any: ...

    def collate(self, items: list[Any]) -> dict[str, torch.Tensor]: ...
