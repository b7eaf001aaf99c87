"""Checkpoints written atomically: a killed run never leaves a half-written one behind.

Layout: `checkpoints/step_000200/{model.safetensors, trainer.pt}`; `trainer.pt` (optimiser state,
step, RNG state) holds only tensors and plain containers, so it loads with `weights_only=True`. Under
`train.strategy: fsdp` the weights and optimiser state are a `torch.distributed.checkpoint` folder
instead, `step_000200/sharded/`, written by every process (`training/sharding.py`).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..distributed import barrier
from ..modalities.base import RenamesOldKeys
from ..runfolder import WEIGHTS, load_weights, read_state_dict, save_state_dict

TRAINER = "trainer.pt"
SHARDED = "sharded"  # train.strategy: fsdp: the torch.distributed.checkpoint folder of weights and optimiser
_STEP_DIR = re.compile(r"^step_(\d+)$")


def save_weights(model: nn.Module, path: Path) -> None:
    """Model weights as safetensors, written atomically."""
    save_state_dict(model.state_dict(), path)


def save_checkpoint(folder: Path, step: int, model: nn.Module, trainer_state: dict[str, Any], keep: int) -> Path:
    """Write `folder/step_<step>` atomically (temporary folder, then rename); keep the newest `keep`."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix=".tmp-step_"))
    try:
        save_weights(model, tmp / WEIGHTS)
        return _publish(tmp, trainer_state, folder / f"step_{step:06d}", keep)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def save_sharded_checkpoint(folder: Path, step: int, write_shards: Callable[[Path], None],
                            trainer_state: dict[str, Any], keep: int, main: bool) -> Path:
    """Every process calls it: each writes its shards (`write_shards(path)`) into
    `folder/.tmp-step_<step>/sharded`, then the main process adds `trainer.pt` and renames the folder to
    `step_<step>` (atomic, as above). Several machines need a shared file system for `folder`."""
    final, tmp = folder / f"step_{step:06d}", folder / f".tmp-step_{step:06d}"
    if main:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    barrier()
    write_shards(tmp / SHARDED)
    barrier()
    return _publish(tmp, trainer_state, final, keep) if main else final


def _publish(tmp: Path, trainer_state: dict[str, Any], final: Path, keep: int) -> Path:
    """Complete the checkpoint written in `tmp` with the trainer state, rename it to `final` (replacing an
    older one of the same step), and delete all but the newest `keep` checkpoints beside it."""
    torch.save(trainer_state, tmp / TRAINER)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_checkpoints(final.parent)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP_DIR.match(p.name))
             and ((p / WEIGHTS).is_file() or is_sharded_checkpoint(p)) and (p / TRAINER).is_file()]
    return [p for _, p in sorted(found)]


def is_sharded_checkpoint(path: Path) -> bool:
    """Written by `save_sharded_checkpoint` (its index is written last: the shards are complete)."""
    return (path / SHARDED / ".metadata").is_file()


def load_checkpoint(path: Path, model: nn.Module) -> dict[str, Any]:
    """Load weights into `model` and return the trainer state."""
    load_weights(model, path / WEIGHTS)
    return torch.load(path / TRAINER, weights_only=True)


def load_sharded_checkpoint(path: Path, read_shards: Callable[[Path], None]) -> dict[str, Any]:
    """`read_shards(path/sharded)` (every process), and return the trainer state."""
    read_shards(path / SHARDED)
    return torch.load(path / TRAINER, weights_only=True)


@dataclass
class WarmStart:
    """What `load_matching_weights` did, weight tensor by weight tensor.

    Attributes:
        loaded: names copied from the source (same name, same shape).
        reshaped: names in both whose shapes differ → (source shape, model shape); left as initialised.
        missing: the model's names the source lacks; left as initialised.
        unused: the source's names the model lacks.
    """

    loaded: list[str]
    reshaped: dict[str, tuple[tuple[int, ...], tuple[int, ...]]]
    missing: list[str]
    unused: list[str]

    def summary(self, source: Path | str, shown: int = 4) -> str:
        """One line for the log: how many loaded and, for the rest, which and why."""
        total = len(self.loaded) + len(self.reshaped) + len(self.missing)
        parts = [f"initialised {len(self.loaded)} of {total} weight tensors from {source}"]
        if self.reshaped:
            named = [f"{n} {tuple(a)} there vs {tuple(b)} here" for n, (a, b) in list(self.reshaped.items())[:shown]]
            more = f" and {len(self.reshaped) - shown} more" if len(self.reshaped) > shown else ""
            parts.append(f"skipped {len(self.reshaped)} of another shape ({'; '.join(named)}{more})")
        if self.missing:
            more = f" and {len(self.missing) - shown} more" if len(self.missing) > shown else ""
            parts.append(f"{len(self.missing)} not in the source ({', '.join(self.missing[:shown])}{more})")
        if self.unused:
            parts.append(f"{len(self.unused)} of the source's unused")
        return "; ".join(parts)


def load_matching_weights(model: nn.Module, path: Path) -> WarmStart:
    """Copy the weights of `path` whose names and shapes match `model`'s (warm start / fine-tuning);
    the model's other weights keep their initial values."""
    source = read_state_dict(path)
    for name, module in model.named_modules():  # the names an earlier version saved, as loading renames them
        if isinstance(module, RenamesOldKeys):
            module.rename_old_keys(source, f"{name}." if name else "")
    own = model.state_dict()
    matched = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(matched, strict=False)
    reshaped = {k: (tuple(v.shape), tuple(own[k].shape)) for k, v in source.items() if k in own and k not in matched}
    return WarmStart(loaded=sorted(matched), reshaped=dict(sorted(reshaped.items())),
                     missing=sorted(k for k in own if k not in source), unused=sorted(k for k in source if k not in own))
