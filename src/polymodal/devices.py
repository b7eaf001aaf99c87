"""Where a model runs and how fast: the device, the precision and the loader workers a setting asks for.

Every setting takes `auto`: the first CUDA GPU (this process's one under `torchrun`) when there is one,
else the CPU; bf16 autocast where the GPU has it, else fp32; as many loader workers as the process has
cores (up to 8) on a GPU, one on a CPU (two compute threads and a worker beat three compute threads there).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from .config import PRECISIONS
from .errors import PolymodalError

MAX_WORKERS = 8


def available_cores() -> int:
    """The cores this process may run on (its affinity mask, which containers and `taskset` narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_device(spec: str | torch.device | None = "auto", *, local_rank: int = 0,
                   where: str = "device") -> torch.device:
    """The device `spec` names: `auto`, `cpu`, `cuda` (this process's GPU, `local_rank` under torchrun) or
    `cuda:N`. Raises PolymodalError naming `where` for a device this machine does not have."""
    text = "auto" if spec is None else str(spec).strip().lower()
    if text == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        index = local_rank if text == "cuda" else _cuda_index(text, where)
        if not torch.cuda.is_available():
            raise PolymodalError(f"{where}: {spec!r} asks for a CUDA GPU, but torch sees none (this torch "
                                 f"{'has no CUDA support' if torch.version.cuda is None else 'finds no GPU'}); "
                                 f"use 'cpu' or 'auto'")
        if index >= torch.cuda.device_count():
            raise PolymodalError(f"{where}: {spec!r} asks for GPU {index}, but this machine has "
                                 f"{torch.cuda.device_count()} (cuda:0 to cuda:{torch.cuda.device_count() - 1})")
        return torch.device(f"cuda:{index}")
    raise PolymodalError(f"{where}: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {spec!r}")


def _cuda_index(text: str, where: str) -> int:
    index = text.split(":", 1)[1]
    if not index.isdigit():
        raise PolymodalError(f"{where}: expected 'cuda:N' with N a GPU number, got {text!r}")
    return int(index)


def resolve_precision(spec: str, device: torch.device, *, where: str = "train.precision") -> str:
    """`fp32` or `bf16` for `spec` on `device`: `auto` is bf16 on a GPU that has it, else fp32; `bf16`
    on a GPU without it is an error (it would run, slowly, in emulation or not at all)."""
    if spec not in PRECISIONS:
        raise PolymodalError(f"{where}: expected one of {', '.join(PRECISIONS)}, got {spec!r}")
    has_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if spec == "auto":
        return "bf16" if has_bf16 else "fp32"
    if spec == "bf16" and device.type == "cuda" and not has_bf16:
        raise PolymodalError(f"{where}: bf16 asked for, but {torch.cuda.get_device_name(device)} has no bf16; "
                             f"use fp32 or auto")
    return spec


def resolve_workers(spec: Any, device: torch.device, *, where: str = "data.num_workers") -> int:
    """Loader worker processes for `spec`: a count, or `auto` (the process's cores up to 8 on a GPU,
    where the model waits for nothing else; one on a CPU, which the model's threads need)."""
    if spec == "auto":
        cores = available_cores()
        return min(cores, MAX_WORKERS) if device.type == "cuda" else min(1, cores - 1)
    if isinstance(spec, bool) or not isinstance(spec, int) or spec < 0:
        raise PolymodalError(f"{where}: expected 'auto' or a number of worker processes (0: load in the "
                             f"training process), got {spec!r}")
    return spec


def allow_fast_math(device: torch.device) -> None:
    """TF32 matrix products and convolutions on a GPU (fp32 inputs, 10-bit mantissa products: the speed
    of tensor cores at the accuracy training needs); nothing on a CPU."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
