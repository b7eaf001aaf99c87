"""Process-group helpers: the same code runs single-process and under `torchrun` (DDP)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def local_rank() -> int:
    """This process's index on its machine (torchrun's LOCAL_RANK; 0 when not started by torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_distributed(cuda: bool | None = None) -> DistInfo:
    """Join the process group when started by torchrun (WORLD_SIZE > 1): nccl when the processes train
    on GPUs (`cuda`; default: whenever there is one), gloo on CPUs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    local = local_rank()
    if cuda:
        torch.cuda.set_device(local)
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` (B, ...) from every process along dim 0, keeping gradients to the local part."""
    if not is_distributed():
        return x
    return torch.cat(dist_fn.all_gather(x), dim=0)


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over processes (for logging); `value` must be on the process group's device
    (the GPU under nccl)."""
    if not is_distributed():
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / dist.get_world_size()


def barrier() -> None:
    if is_distributed():
        dist.barrier()
