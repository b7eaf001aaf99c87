"""Fitting a model in memory, block by block: FSDP2 (`train.strategy: fsdp`) and activation checkpointing.

FSDP2: each process holds a shard of every weight, gradient and optimiser state.

`shard` puts `fully_shard` on each transformer block (ours, and the layer classes a Hugging Face model
names in `_no_split_modules`), then on the whole model for the rest: a block's weights are gathered just
before it runs and freed after. Under bf16 the gathered weights are bf16 and gradients are reduced in fp32.

Checkpoints are `torch.distributed.checkpoint` folders (`step_N/sharded/`, laid out by `checkpoint.py`),
one file per process, which load at any number of processes. `gathered` puts the whole weights on every
process for validation (which calls parts of the model directly), and `whole_state_dict` collects them on
the main process for export: the exported `model/` is an ordinary safetensors file that `load()` reads
without a process group.

Activation checkpointing (`train.activation_checkpointing`): the same blocks keep only their input for the
backward pass and compute their activations again there.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_state_dict,
                                                     set_state_dict)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method
from torch.distributed.tensor import DTensor

from ..errors import PolymodalError
from ..layers.transformer import TransformerBlock

def block_classes(model: nn.Module) -> tuple[type, ...]:
    """The module classes sharded on their own: our transformer block and the classes each Hugging Face
    model inside `model` says must not be split (its decoder or encoder layers)."""
    names = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or ())
    hf = {type(m) for m in model.modules() if type(m).__name__ in names}
    return (TransformerBlock, *sorted(hf, key=lambda c: c.__name__))


def shard(model: nn.Module, device: torch.device, precision: str) -> int:
    """`fully_shard` each block, then the model, over all processes; returns the number of blocks."""
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
              if precision == "bf16" else MixedPrecisionPolicy())
    classes = block_classes(model)
    blocks = [m for m in model.modules() if isinstance(m, classes)]
    scalars = set(replicated(model))
    for block in blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy, ignored_params=scalars)
        for method in getattr(block, "ENTRY_POINTS", ()):  # called from outside: gather around them too
            register_fsdp_forward_method(block, method)
    fully_shard(model, mesh=mesh, mp_policy=policy, ignored_params=scalars)
    return len(blocks)


def checkpoint_activations(model: nn.Module) -> int:
    """Activation checkpointing on every block (ours, and the layers of each Hugging Face model that
    supports it, through its `gradient_checkpointing_enable`); returns the number of blocks."""
    classes = block_classes(model)
    for module in model.modules():
        if isinstance(module, TransformerBlock):
            module.checkpointed = True
        elif getattr(module, "supports_gradient_checkpointing", False):  # a Hugging Face model
            if hasattr(module, "activation_checkpointing_enable"):  # transformers ≥ 5.x's name
                module.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return sum(isinstance(m, classes) for m in model.modules())


def replicated(model: nn.Module) -> list[nn.Parameter]:
    """The parameters FSDP cannot shard (scalars: a CLIP temperature): whole on every process, their
    gradients averaged by the trainer."""
    return [p for p in model.parameters() if p.dim() == 0]


def clip_grad_norm(params: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """`torch.nn.utils.clip_grad_norm_` over sharded (DTensor) and whole parameters together: the total
    norm of all gradients, as an ordinary tensor."""
    groups = [[p for p in params if p.grad is not None and isinstance(p.grad, DTensor) is sharded]
              for sharded in (True, False)]
    norms = [full_norm(torch.nn.utils.get_total_norm([p.grad for p in group])) for group in groups if group]
    total = torch.linalg.vector_norm(torch.stack(norms))
    for group in groups:
        if group:
            torch.nn.utils.clip_grads_with_norm_(group, max_norm, total)
    return total


def is_sharded(model: nn.Module) -> bool:
    return isinstance(model, FSDPModule)


@contextmanager
def gathered(model: nn.Module) -> Iterator[None]:
    """Every weight whole on every process inside the block (for validation and generation, which call parts
    of the model directly); sharded again after. Every process must enter it."""
    if not is_sharded(model):
        yield
        return
    parts = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for part in parts:
        part.set_reshard_after_forward(False, recurse=False)
        part.unshard()
    try:
        yield
    finally:
        for part in parts:
            part.reshard()
            part.set_reshard_after_forward(True, recurse=False)


def whole_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The sharded model's whole state dict, on the CPU of the main process (empty on the others); every
    process must call it."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def full_norm(norm: torch.Tensor) -> torch.Tensor:
    """`clip_grad_norm_`'s total norm as an ordinary tensor (a DTensor over sharded gradients)."""
    return norm.full_tensor() if isinstance(norm, DTensor) else norm


def _owner(model: nn.Module, extra: nn.Module) -> nn.Module:
    """One module holding every parameter the optimiser steps: the model's and `extra`'s (learnt loss
    weights), as `model.*` and `extra.*`."""
    return nn.ModuleDict({"model": model, "extra": extra})


def save_sharded(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, extra: nn.Module) -> None:
    """The state of the model, of `extra` (the optimiser's other parameters) and of the optimiser into the
    `torch.distributed.checkpoint` folder `path` (every process writes its own shard; a collective call)."""
    model_state, optim_state = get_state_dict(_owner(model, extra), optimizer)
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=path)


def load_sharded(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, extra: nn.Module) -> None:
    """Load `save_sharded`'s state into the model, `extra` and the optimiser, at any number of processes
    (sharded or not)."""
    owner = _owner(model, extra)
    model_state, optim_state = get_state_dict(owner, optimizer)  # makes every parameter's optimiser state
    saved = set(dcp.FileSystemReader(path).read_metadata().state_dict_metadata)
    missing = [k for k in model_state if f"model.{k}" not in saved]
    if missing:
        raise PolymodalError(f"{path}: the checkpoint lacks {len(missing)} of this model's weights "
                             f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}); was it written "
                             "by another config?")
    for name, values in optim_state["state"].items():  # parameters that never had a gradient have no state
        for key in [k for k in values if f"optimizer.state.{name}.{k}" not in saved]:
            del values[key]
    state: dict[str, Any] = {"model": model_state, "optimizer": optim_state}
    dcp.load(state, checkpoint_id=path)
    set_state_dict(owner, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
