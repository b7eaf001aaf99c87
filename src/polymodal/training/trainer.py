"""The training recipe, top-down: set up, fit, validate, export. One loop for any model and tasks."""

from __future__ import annotations

import json
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel

from ..build import build_system
from ..config import Config
from ..data.loader import StepSampler, TaskDataset, train_loader
from ..data.manifest import read_manifest
from ..errors import ConfigError, PolymodalError
from ..evaluation.harness import evaluate, task_records
from .checkpoint import (WEIGHTS, list_checkpoints, load_checkpoint, load_matching_weights, save_checkpoint,
                         save_weights)
from .distributed import DistInfo, all_reduce_mean, barrier, init_distributed
from .optim import lr_at, make_optimizer
from .progress import Progress

MODEL_DIR = "model"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def read_split(config: Config, split: str, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """The records of `data.<split>` (empty when unset); bad records fail or are skipped per data.on_error."""
    path = getattr(config.data, split)
    if path is None:
        return []
    return read_manifest(path, on_error=config.data.on_error, log=log)


def model_folder(path: str | Path) -> Path:
    """A run folder's `model/`, or the folder itself if it is a model folder."""
    path = Path(path)
    if (path / MODEL_DIR / WEIGHTS).is_file():
        return path / MODEL_DIR
    if (path / WEIGHTS).is_file():
        return path
    raise PolymodalError(f"{path}: not a run or model folder (no {MODEL_DIR}/{WEIGHTS} or {WEIGHTS})")


def freeze(model: torch.nn.Module, prefixes: list[str]) -> None:
    """Stop training the parameters under each prefix (`encoders.image` or `backbone.encoders.image`)."""
    names = [name for name, _ in model.named_parameters()]
    for prefix in prefixes:
        heads = (f"{prefix}.", f"backbone.{prefix}.")  # whole dotted components: `encoders.imag` is no prefix
        matched = [n for n in names if n.startswith(heads)]
        if not matched:
            tops = sorted({".".join(n.split(".")[:3]) for n in names})
            raise ConfigError(f"train.freeze: {prefix!r} matches no parameter; modules: {', '.join(tops)}")
        for name, p in model.named_parameters():
            if name in matched:
                p.requires_grad_(False)


def format_results(results: dict[str, dict[str, float]], title: str) -> str:
    lines = [f"{title}:"]
    for task, metrics in results.items():
        shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k != "n")
        lines.append(f"  {task} (n={int(metrics.get('n', 0))}): {shown}")
    return "\n".join(lines)


class Trainer:
    """Trains `config`'s model on its tasks, writing the run folder `out`.

    Args:
        config: validated config.
        out: run folder (config.yaml, metrics.jsonl, checkpoints/, model/).
        resume: continue from the newest checkpoint in `out`.
        log: where human-readable lines go.
        stop_at: stop (as if killed) after this step; for tests of resumption.
    """

    def __init__(self, config: Config, out: Path, *, resume: bool = False, log: Callable[[str], None] = print,
                 stop_at: int | None = None):
        self.config, self.out, self.stop_at = config, Path(out), stop_at
        self.dist: DistInfo = init_distributed()
        self.log = log if self.dist.is_main else (lambda _: None)
        self.device = torch.device(f"cuda:{self.dist.local_rank}" if torch.cuda.is_available() else "cpu")
        tc = config.train
        if not config.data.train:
            raise ConfigError("data.train: a training manifest is required (set it in the config or with "
                              "--set data.train=PATH)")
        seed_everything(tc.seed)
        self.train_records = read_split(config, "train", self.log)
        self.val_records = read_split(config, "val", self.log)

        checkpoints = list_checkpoints(self.out / "checkpoints") if resume else []
        if resume and not checkpoints:
            self.log(f"no checkpoint in {self.out / 'checkpoints'}; starting from scratch")
        artifacts = self.out / MODEL_DIR
        if checkpoints:  # the tokenizer and vocabularies were learnt when the run started
            self.system = build_system(config, artifacts=artifacts)
        elif self.dist.is_main:
            self.system = build_system(config, self.train_records)
            self.system.save_artifacts(artifacts)
            resolved = yaml.safe_dump(config.to_dict(), sort_keys=False)
            (artifacts / "config.yaml").write_text(resolved)
            (self.out / "config.yaml").write_text(resolved)
            barrier()
        else:  # the other processes use what the main one learnt, so every copy of the model is the same
            barrier()
            self.system = build_system(config, artifacts=artifacts)
        self.model = self.system.model.to(self.device)
        if tc.init_from and not checkpoints:
            source = model_folder(tc.init_from) / WEIGHTS
            warm = load_matching_weights(self.model, source)
            if not warm.loaded:
                raise PolymodalError(f"train.init_from: no weights of {source} match this model "
                                     f"({warm.summary(source)})")
            self.log(warm.summary(source))
        freeze(self.model, tc.freeze)
        self.optimizer = make_optimizer(self.model, tc.lr, tc.weight_decay)
        self.step = 0
        if checkpoints:
            state = load_checkpoint(checkpoints[-1], self.model)
            self.optimizer.load_state_dict(state["optimizer"])
            self.step = int(state["step"])
            torch.set_rng_state(state["rng"])
            self.log(f"resumed from {checkpoints[-1]} at step {self.step}")
        self.metrics_path = self.out / "metrics.jsonl"
        if self.dist.is_main:
            self._truncate_metrics(self.step)
        self.ddp = None
        if self.dist.world_size > 1:
            ids = [self.dist.local_rank] if self.device.type == "cuda" else None
            # a task may leave parts unused (an image-only task skips the text encoder)
            self.ddp = DistributedDataParallel(self.model, device_ids=ids, find_unused_parameters=True)
        self._check_modality_dropout()
        self.loaders = self._loaders()

    def _check_modality_dropout(self) -> None:
        for modality, chance in self.config.train.modality_dropout.items():
            where = f"train.modality_dropout.{modality}"
            if modality not in self.model.backbone.encoders:
                raise ConfigError(f"{where}: this model has no {modality!r} encoder; it has: "
                                  f"{', '.join(sorted(self.model.backbone.encoders))}")
            if not isinstance(chance, (int, float)) or isinstance(chance, bool) or not 0 <= chance < 1:
                raise ConfigError(f"{where}: expected a chance from 0 to below 1, got {chance!r}")

    def _truncate_metrics(self, step: int) -> None:
        """Drop log lines past `step`: a resumed run writes them again."""
        if not self.metrics_path.exists():
            return
        kept = [line for line in self.metrics_path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        self.metrics_path.write_text("".join(line + "\n" for line in kept))

    def _loaders(self) -> dict[str, Any]:
        tc, loaders = self.config.train, {}
        for name, task in self.model.tasks.items():
            records = task_records(self.system, name, self.train_records)
            lacking = {m: sum(f not in r for r in records) for m, f in task.data.inputs.items()}
            if any(lacking.values()):
                self.log(f"tasks.{name}: {len(records)} training records; without "
                         + ", ".join(f"{m}: {n}" for m, n in lacking.items() if n) + " (a learned placeholder)")
            if not records:
                raise PolymodalError(f"tasks.{name}: no training record carries the fields it needs "
                                     f"({', '.join(task.data.fields)})")
            try:
                sampler = StepSampler(len(records), tc.batch_size, seed=tc.seed, start_step=self.step,
                                      rank=self.dist.rank, world_size=self.dist.world_size,
                                      micro_batches=tc.accumulate, max_steps=tc.max_steps)
            except ValueError as e:
                raise ConfigError(f"train.batch_size: {e} (task {name})") from None
            dataset = TaskDataset(records, task.data, self.system.processors, seed=tc.seed,
                                  modality_dropout=tc.modality_dropout)
            loaders[name] = iter(train_loader(dataset, sampler, self.config.data.num_workers))
        return loaders

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        inputs = {m: {k: v.to(self.device, non_blocking=True) for k, v in part.items()}
                  for m, part in batch["inputs"].items()}
        return {"inputs": inputs, "target": _move(batch["target"], self.device)}

    def _log_metrics(self, record: dict[str, Any]) -> None:
        if self.dist.is_main:
            with self.metrics_path.open("a") as f:
                f.write(json.dumps(record) + "\n")

    def train_step(self) -> dict[str, float]:
        """One optimiser step over `accumulate` micro-batches of every task."""
        tc = self.config.train
        net = self.ddp or self.model
        totals: dict[str, float] = {}
        for micro in range(tc.accumulate):
            batches = {name: self._to_device(next(loader)) for name, loader in self.loaders.items()}
            sync = micro == tc.accumulate - 1 or self.ddp is None
            autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=tc.precision == "bf16")
            with (nullcontext() if sync else self.ddp.no_sync()):
                with autocast:
                    outputs = net(batches)
                    loss = sum(self.model.tasks[n].weight * o["loss"] for n, o in outputs.items())
                (loss / tc.accumulate).backward()
            for name, o in outputs.items():
                totals[f"loss/{name}"] = totals.get(f"loss/{name}", 0.0) + o["loss"].item() / tc.accumulate
            totals["loss"] = totals.get("loss", 0.0) + loss.item() / tc.accumulate
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip or float("inf"))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        totals = {k: all_reduce_mean(torch.tensor(v)).item() for k, v in totals.items()}
        totals["grad_norm"] = float(grad_norm)
        return totals

    def validate(self) -> dict[str, dict[str, float]]:
        if not self.val_records:
            return {}
        return evaluate(self.system, self.val_records, self.config.train.eval_batch_size, self.device)

    def save(self) -> None:
        if self.dist.is_main:
            state = {"step": self.step, "optimizer": self.optimizer.state_dict(), "rng": torch.get_rng_state()}
            save_checkpoint(self.out / "checkpoints", self.step, self.model, state,
                            self.config.train.keep_checkpoints)
        barrier()

    def fit(self) -> Path:
        """Run to `train.max_steps`, validate, export; returns the exported model folder."""
        tc = self.config.train
        self.model.train()
        progress = Progress(tc.max_steps, self.step, enabled=tc.progress and self.dist.is_main, log=self.log)
        start_step, started = self.step, time.perf_counter()
        with progress:
            while self.step < tc.max_steps:
                lr = lr_at(self.step, lr=tc.lr, warmup_steps=tc.warmup_steps, max_steps=tc.max_steps,
                           min_lr_ratio=tc.min_lr_ratio)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                values = self.train_step()
                self.step += 1
                elapsed = time.perf_counter() - started
                rate = (self.step - start_step) * tc.batch_size * len(self.loaders) / max(elapsed, 1e-9)
                progress.update(self.step, values["loss"], rate)
                if self.step % tc.log_every == 0 or self.step == tc.max_steps:
                    self._log_metrics({"step": self.step, "lr": lr, "samples_per_s": rate, **values})
                if tc.val_every and self.step % tc.val_every == 0 and self.step < tc.max_steps:
                    self._log_metrics({"step": self.step, "val": self.validate()})
                    self.model.train()
                if self.step % tc.ckpt_every == 0 or self.step == tc.max_steps:
                    self.save()
                if self.stop_at is not None and self.step >= self.stop_at:
                    return self.out / MODEL_DIR
        val = self.validate()
        if val:
            self._log_metrics({"step": self.step, "val": val})
            self.log(format_results(val, "validation"))
        return self.export()

    def export(self) -> Path:
        """Write the final weights beside the config, tokenizer and vocabularies in `model/`."""
        folder = self.out / MODEL_DIR
        if self.dist.is_main:
            save_weights(self.model, folder / WEIGHTS)
        barrier()
        return folder


def train(config: Config, out: str | Path, *, resume: bool = False, log: Callable[[str], None] = print) -> Path:
    """Train `config` into the run folder `out`; returns the exported model folder."""
    return Trainer(config, Path(out), resume=resume, log=log).fit()


def _move(target: Any, device: torch.device) -> Any:
    """A batch's targets on `device`: a tensor, or a mapping of tensors (ragged token targets and their mask)."""
    if isinstance(target, dict):
        return {k: _move(v, device) for k, v in target.items()}
    return target.to(device, non_blocking=True) if isinstance(target, torch.Tensor) else target
