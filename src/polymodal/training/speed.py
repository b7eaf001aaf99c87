"""How fast training runs against the hardware: the FLOPs of a step, the chip's peak, tokens in a batch.

MFU (model FLOPs utilisation) is the FLOPs a step really does (counted once per set of tasks by
`torch.utils.flop_counter.FlopCounterMode`: matrix products, convolutions and attention, forward and
backward) per second, as a share of the chip's dense peak at the precision it trains in. The peaks are the
datasheets' figures without sparsity; `train.peak_tflops` sets one for a chip that is not listed (or for
a CPU).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch.utils.flop_counter import FlopCounterMode

TIMED = ("samples_per_s", "tokens_per_s", "data_wait", "mfu")  # the log's figures that depend on the clock

# GPU name (a part of `torch.cuda.get_device_name()`) → dense peak TFLOP/s per chip: (bf16, fp32 as TF32)
PEAK_TFLOPS: dict[str, tuple[float, float]] = {
    "B200": (2250.0, 1100.0),
    "H200": (989.0, 494.0),
    "GH200": (989.0, 494.0),
    "H100 NVL": (835.0, 418.0),
    "H100 PCIe": (756.0, 378.0),
    "H100": (989.0, 494.0),  # SXM
    "A100": (312.0, 156.0),
    "L40S": (362.0, 183.0),
    "L4": (121.0, 60.0),
    "A10": (125.0, 62.5),
    "RTX 4090": (165.0, 82.6),
    "RTX 3090": (71.0, 35.6),
    "MI300X": (1307.0, 654.0),
}


def peak_tflops(device: torch.device, precision: str, override: float | None = None) -> float | None:
    """The dense peak TFLOP/s of `device` at `precision` (`bf16` or `fp32`): `override` when given, else
    the table's figure for a GPU whose name contains one of its keys (the longest match), else None."""
    if override is not None:
        return float(override)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):
        if key in name:
            bf16, tf32 = PEAK_TFLOPS[key]
            return bf16 if precision == "bf16" else tf32
    return None


class FlopsPerStep:
    """The FLOPs of one optimiser step of each set of tasks, counted the first time that set trains."""

    def __init__(self) -> None:
        self.flops: dict[tuple[str, ...], int] = {}

    def known(self, tasks: list[str]) -> bool:
        return tuple(tasks) in self.flops

    @contextmanager
    def count(self, tasks: list[str]) -> Iterator[None]:
        """Count the FLOPs of what runs inside as the step of `tasks`."""
        with warnings.catch_warnings():
            # the counter's module hooks make torch.compile warn that hooks fire twice; they only count
            warnings.filterwarnings("ignore", message=".*global hooks on modules.*")
            with FlopCounterMode(display=False) as counter:
                yield
        self.flops[tuple(tasks)] = counter.get_total_flops()

    def __getitem__(self, tasks: list[str]) -> int:
        return self.flops[tuple(tasks)]


def text_tokens(batch: Any) -> torch.Tensor | None:
    """The real (unpadded) text tokens of a batch, inputs and generated targets: the `mask` of every part
    that holds token ids (an integer `data` or `ids` tensor). A tensor on the batch's device (no wait for
    it), or None when the batch has no text."""
    counts = []

    def visit(part: Any) -> None:
        if isinstance(part, dict):
            ids = part.get("data", part.get("ids"))
            mask = part.get("mask")
            if isinstance(ids, torch.Tensor) and isinstance(mask, torch.Tensor) and not ids.is_floating_point():
                counts.append(mask.sum())
                return
            for value in part.values():
                visit(value)

    visit(batch)
    return torch.stack(counts).sum() if counts else None
