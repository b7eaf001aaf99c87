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
from safetensors.torch import load_file
from torch.nn.parallel import DistributedDataParallel

from ..builders import build_system
from ..config import Config
from torch.utils.data import DataLoader

from ..data.loader import StepSampler, TaskDataset, to_device, train_loader
from ..data.manifest import in_subset
from ..data.shards import is_shard_pattern, shard_urls
from ..data.stream import ShardStream
from ..devices import allow_fast_math, resolve_device, resolve_precision, resolve_workers
from ..distributed import DistInfo, all_reduce_mean, barrier, init_distributed, local_rank
from ..errors import ConfigError, PolymodalError
from ..evaluation.harness import evaluate, task_records
from ..runfolder import (BEST_DIR, CHECKPOINTS, CONFIG, METRICS, MODEL_DIR, WEIGHTS, model_folder,
                         save_state_dict)
from ..system import System
from .checkpoint import (is_sharded_checkpoint, list_checkpoints, load_checkpoint, load_matching_weights,
                         load_sharded_checkpoint, save_checkpoint, save_sharded_checkpoint)
from .loggers import flatten, make_loggers
from .lora import adapted_layers, add_lora, merged_state_dict
from .multitask import SharedTaskDataset, TaskSampler, batch_groups, distinct, task_manifest, task_splits
from .optim import lr_at, make_optimizer, trainable_summary, under_prefix
from .progress import Progress
from .selection import BestTracker
from .sharding import (checkpoint_activations, clip_grad_norm, gathered, load_sharded, replicated, save_sharded,
                       shard, whole_state_dict)
from .speed import FlopsPerStep, peak_tflops, text_tokens
from .weighting import GradNorm, make_weighting


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def freeze(model: torch.nn.Module, prefixes: list[str]) -> None:
    """Stop training the parameters under each prefix (`encoders.image` or `backbone.encoders.image`)."""
    names = [name for name, _ in model.named_parameters()]
    for prefix in prefixes:
        matched = set(under_prefix(names, prefix, "train.freeze"))
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
        self._choose_device()
        self.dist: DistInfo = init_distributed(cuda=self.device.type == "cuda")
        self.log = log if self.dist.is_main else (lambda _: None)
        seed_everything(config.train.seed)
        self._read_data()
        checkpoints = self._checkpoints(resume)
        self.system = self._build(resumed=bool(checkpoints))
        self.model = self.system.model.to(self.device)
        if config.train.init_from and not checkpoints:
            self._warm_start(config.train.init_from)
        self._adapt_and_freeze()
        self.sharded = self._shard()
        self.weighting = make_weighting(config.train.loss_weighting,
                                        {n: t.weight for n, t in self.model.tasks.items()}, seed=config.train.seed,
                                        alpha=config.train.gradnorm_alpha).to(self.device)
        # parameters whose gradients the trainer averages over processes itself: the learnt loss weights
        # (outside the model) and, under FSDP, the model's scalars (which it cannot shard)
        self.replicated = [*self.weighting.parameters(), *(replicated(self.model) if self.sharded else [])]
        self.optimizer = make_optimizer(self.model, config.train.lr, config.train.weight_decay, config.train.lr_mult,
                                        extra=list(self.weighting.parameters()), fused=self.device.type == "cuda")
        self.tracker = self._tracker()
        self.resumed_streams = None  # how the checkpoint's run streamed its shards
        self.step = self._resume(checkpoints[-1]) if checkpoints else 0
        self.metrics_path = self.out / METRICS
        if self.dist.is_main:
            self._truncate_metrics(self.step)
        self.ddp = None if self.sharded else self._wrap_ddp()
        self.compiled = self._compile()
        self._check_modality_dropout()
        self.loaders = self._loaders()
        self.log(f"device {self.device}, precision {self.precision}, {self.workers} loader "
                 f"worker{'s' if self.workers != 1 else ''} per task group"
                 + (", compiled" if self.compiled is not None else ""))

    def _choose_device(self) -> None:
        """The device, precision and loader workers `train.device`, `train.precision` and
        `data.num_workers` ask for on this machine; TF32 on a GPU."""
        self.device = resolve_device(self.config.train.device, local_rank=local_rank(), where="train.device")
        self.precision = resolve_precision(self.config.train.precision, self.device)
        self.workers = resolve_workers(self.config.data.num_workers, self.device)
        allow_fast_math(self.device)
        self.peak_tflops = peak_tflops(self.device, self.precision, self.config.train.peak_tflops)
        # for the log: seconds spent waiting for batches, text tokens read, FLOPs done
        self.data_wait, self.tokens, self.flops_done = 0.0, torch.zeros((), dtype=torch.long, device=self.device), 0
        self.flops = FlopsPerStep()
        self.loggers: list = []  # train.loggers, while fitting

    def _read_data(self) -> None:
        """Each task's training and validation records (its own manifests, else `data:`'s)."""
        if not all(task_manifest(self.config, name, "train") for name in self.config.tasks):
            raise ConfigError("data.train: a training manifest is required (set it in the config or with "
                              "--set data.train=PATH, or give every task its own tasks.NAME.data.train)")
        self.train_records = task_splits(self.config, "train", self.log)  # task → its manifest's records
        self.val_records = task_splits(self.config, "val", self.log)

    def _checkpoints(self, resume: bool) -> list[Path]:
        """The run's complete checkpoints, oldest first, when resuming."""
        checkpoints = list_checkpoints(self.out / CHECKPOINTS) if resume else []
        if resume and not checkpoints:
            self.log(f"no checkpoint in {self.out / CHECKPOINTS}; starting from scratch")
        return checkpoints

    def _build(self, resumed: bool) -> System:
        """The system, its tokenizer and vocabularies learnt from every training manifest by the main process
        and saved in `model/` with the resolved config; a resumed run and the other processes read them
        back, so every copy of the model is the same."""
        artifacts = self.out / MODEL_DIR
        if resumed:
            return build_system(self.config, artifacts=artifacts)
        if not self.dist.is_main:
            barrier()
            return build_system(self.config, artifacts=artifacts)
        system = build_system(self.config, distinct(list(self.train_records.values())))
        system.save_artifacts(artifacts)
        resolved = yaml.safe_dump(self.config.to_dict(), sort_keys=False)
        (artifacts / CONFIG).write_text(resolved)
        (self.out / CONFIG).write_text(resolved)
        barrier()
        return system

    def _warm_start(self, source: str) -> None:
        """Start from the weights of the model `train.init_from` names that match this one's."""
        weights = model_folder(source) / WEIGHTS
        warm = load_matching_weights(self.model, weights)
        if not warm.loaded:
            raise PolymodalError(f"train.init_from: no weights of {weights} match this model ({warm.summary(weights)})")
        self.log(warm.summary(weights))

    def _adapt_and_freeze(self) -> None:
        """LoRA adapters (`train.lora`), the frozen prefixes (`train.freeze`), activation checkpointing."""
        tc = self.config.train
        if tc.lora is not None:
            adapted = add_lora(self.model, tc.lora)
            self.log(f"LoRA (r={tc.lora.get('r', 8)}) on {len(adapted)} linear layers")
        freeze(self.model, tc.freeze)
        self.log(trainable_summary(self.model))
        if tc.activation_checkpointing:
            blocks = checkpoint_activations(self.model)
            self.log(f"activation checkpointing on {blocks} transformer block{'s' if blocks != 1 else ''}")

    def _shard(self) -> bool:
        """`train.strategy: fsdp` over several processes: the model sharded (before its optimiser is made)."""
        if self.config.train.strategy != "fsdp" or self.dist.world_size == 1:
            return False
        blocks = shard(self.model, self.device, self.precision)
        self.log(f"FSDP over {self.dist.world_size} processes: {blocks} transformer block{'s' if blocks != 1 else ''} "
                 "sharded one by one, the rest as one")
        return True

    def _resume(self, checkpoint: Path) -> int:
        """Load the model, optimiser, RNG, loss weighting and best-model tracker; returns the step."""
        if is_sharded_checkpoint(checkpoint):  # train.strategy: fsdp wrote it; it loads at any number of processes
            state = load_sharded_checkpoint(checkpoint, lambda path: load_sharded(path, self.model, self.optimizer,
                                                                                  self.weighting))
        elif self.sharded:
            raise PolymodalError(f"{checkpoint}: written by a run with train.strategy: ddp (whole weights); resume "
                                 "it with ddp, or start an fsdp run from its weights with train.init_from")
        else:
            state = load_checkpoint(checkpoint, self.model)
            self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        self.resumed_streams = state.get("streams")
        self.weighting.load_state_dict(state.get("weighting", {}))
        if self.tracker is not None and "best" in state:
            self.tracker.load_state_dict(state["best"])
        self.log(f"resumed from {checkpoint} at step {int(state['step'])}")
        return int(state["step"])

    def _wrap_ddp(self) -> DistributedDataParallel | None:
        if self.dist.world_size == 1:
            return None
        ids = [self.dist.local_rank] if self.device.type == "cuda" else None
        # a task may leave parts unused (an image-only task skips the text encoder)
        return DistributedDataParallel(self.model, device_ids=ids, find_unused_parameters=True)

    def _compile(self) -> torch.nn.Module | None:
        """`train.compile`: the (DDP-wrapped) model through torch.compile; recurrent layers (the GRU text
        encoder) are traced too rather than left out of the graph."""
        if not self.config.train.compile:
            return None
        torch._dynamo.config.allow_rnn = True
        return torch.compile(self.ddp or self.model)

    def _tracker(self) -> BestTracker | None:
        """The `train.select` metric's tracker; its task must have validation records."""
        tc = self.config.train
        if tc.select is None:
            return None
        task = tc.select["metric"].split("/", 1)[0]
        if not self.val_records.get(task):
            raise ConfigError(f"train.select.metric: task {task!r} has no validation records "
                              f"(set tasks.{task}.data.val or data.val)")
        patience = tc.early_stop["patience"] if tc.early_stop else None
        return BestTracker(tc.select["metric"], tc.select["mode"], patience)

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

    def _loaders(self) -> dict[tuple[str, ...], Any]:
        """One endless loader per group of tasks that share batches (each task alone unless
        `task_sampling: all` and they read the same records the same way), resumed at its own step."""
        tc, usable = self.config.train, {}
        for name, task in self.model.tasks.items():
            usable[name] = records = task_records(self.system, name, self.train_records[name])
            lacking = {m: sum(f not in r for r in records) for m, f in task.data.inputs.items()}
            if any(lacking.values()):
                self.log(f"tasks.{name}: {len(records)} training records; without "
                         + ", ".join(f"{m}: {n}" for m, n in lacking.items() if n) + " (a learned placeholder)")
            if not records:
                raise PolymodalError(f"tasks.{name}: no training record carries the fields it needs "
                                     f"({', '.join(task.data.fields)})")
        names = list(self.model.tasks)
        self.sampler = TaskSampler(names, [len(usable[n]) for n in names], tc.task_sampling, seed=tc.seed,
                                   temperature=tc.task_temperature)
        data = {n: self.model.tasks[n].data for n in names}
        groups = (batch_groups(data, usable, {n: task_manifest(self.config, n, "train") for n in names},
                               tc.modality_dropout) if tc.task_sampling == "all" else [[n] for n in names])
        starts, ends = self.sampler.draws_before(self.step), self.sampler.draws_before(tc.max_steps)
        loaders = {}
        self.streams = None  # (processes, workers) when a split streams from shards
        for members in groups:
            first = members[0]
            manifest = task_manifest(self.config, first, "train")
            streamed = is_shard_pattern(manifest)
            try:
                sampler = StepSampler(len(usable[first]), tc.batch_size, seed=tc.seed, start_step=starts[first],
                                      rank=self.dist.rank, world_size=self.dist.world_size,
                                      micro_batches=tc.accumulate, max_steps=ends[first])
            except ValueError as e:
                raise ConfigError(f"train.batch_size: {e} (task {first})") from None
            records = [] if streamed else usable[first]  # a stream reads its own
            if len(members) == 1:
                dataset = TaskDataset(records, data[first], self.system.processors, seed=tc.seed,
                                      modality_dropout=tc.modality_dropout)
            else:
                own = [n for n in members if self.model.tasks[n].corrupts]  # masked modelling: a pass of its own
                passes = (" and its model pass" if not own else f"; {', '.join(own)} "
                          + ("gets a model pass of its own" if len(own) == 1 else "get passes of their own"))
                self.log(f"tasks {', '.join(members)} share each batch{passes}")
                dataset = SharedTaskDataset(records, {n: data[n] for n in members}, self.system.processors,
                                            seed=tc.seed, modality_dropout=tc.modality_dropout)
            if streamed:
                loader = self._stream(manifest, dataset, data[first], starts[first])
            else:
                loader = train_loader(dataset, sampler, self.workers, pin_memory=self.device.type == "cuda")
            loaders[tuple(members)] = iter(loader)
        return loaders

    def _stream(self, pattern: str, dataset: TaskDataset, task_data: Any, start_step: int) -> DataLoader:
        """A training split's micro-batches streamed from WebDataset shards (`data/stream.py`)."""
        tc, fraction = self.config.train, self.config.data.train_fraction
        urls = shard_urls(pattern)
        streams = self.dist.world_size * max(1, self.workers)
        self.streams = {"processes": self.dist.world_size, "workers": max(1, self.workers)}
        before = self.resumed_streams
        if before is not None and before != self.streams:
            self.log(f"the shards were streamed by {before['processes']} processes × {before['workers']} workers "
                     f"before and are by {self.streams['processes']} × {self.streams['workers']} now: each stream "
                     "resumes where its namesake stopped, and the order of examples differs from an "
                     "uninterrupted run's (keep data.num_workers and the process count for an exact resume)")
        each, extra = divmod(len(urls), streams)
        split = (f"{each}{f' or {each + 1}' if extra else ''} shards an epoch each" if each else
                 f"each reads all {len(urls)} and keeps every {streams}th sample: write {streams} shards or more "
                 "to read each once")
        workers = max(1, self.workers)
        self.log(f"streaming {len(urls)} shards of {pattern} in {streams} stream{'s' if streams > 1 else ''} "
                 f"({self.dist.world_size} process{'es' if self.dist.world_size > 1 else ''} × {workers} "
                 f"worker{'s' if workers > 1 else ''}; {split}), shuffle buffer {self.config.data.shuffle_buffer}")
        stream = ShardStream(urls, dataset, tc.batch_size // (self.dist.world_size * tc.accumulate),
                             keep=lambda record: task_data.usable(record) and in_subset(record, fraction),
                             seed=tc.seed, rank=self.dist.rank, world_size=self.dist.world_size,
                             start=start_step * tc.accumulate, buffer=self.config.data.shuffle_buffer)
        # its own generator, as train_loader's: starting the workers must not move the restored RNG state
        return DataLoader(stream, batch_size=None, num_workers=self.workers, persistent_workers=self.workers > 0,
                          prefetch_factor=4 if self.workers else None, pin_memory=self.device.type == "cuda",
                          generator=torch.Generator().manual_seed(tc.seed))

    def _next_batches(self, names: list[str]) -> dict[str, dict[str, Any]]:
        """Task name → batch on the device for `names`; tasks of one group share its inputs and its name
        as their `group` (so they share one backbone pass)."""
        batches, started = {}, time.perf_counter()
        for members, loader in self.loaders.items():
            if not any(n in names for n in members):
                continue
            batch = self._to_device(next(loader))
            tokens = text_tokens(batch)
            if tokens is not None:
                self.tokens += tokens
            for name in members:
                target = batch["target"][name] if len(members) > 1 else batch["target"]
                batches[name] = {"inputs": batch["inputs"], "target": target, "group": "+".join(members)}
        self.data_wait += time.perf_counter() - started
        with self._autocast():  # a teacher runs here, outside the (compiled) model's forward
            return {n: {**batches[n], "target": task.frozen_target(batches[n]["target"])}
                    for n, task in self.model.tasks.items() if n in batches}

    def _autocast(self) -> torch.autocast:
        """bf16 autocast when `train.precision` is bf16, else a context that changes nothing."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {"inputs": to_device(batch["inputs"], self.device), "target": to_device(batch["target"], self.device)}

    def _log_metrics(self, record: dict[str, Any]) -> None:
        """A line of `metrics.jsonl`, and the same figures to `train.loggers`."""
        if self.dist.is_main:
            with self.metrics_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
            for logger in self.loggers:
                logger.log(record["step"], flatten(record))

    def train_step(self) -> dict[str, float]:
        """One optimiser step (`_step`) and its figures as numbers, averaged over processes."""
        names = self.sampler.tasks_at(self.step)
        weights = self.weighting.weights()
        return {**self._numbers(self._step(names)), **{f"weight/{n}": weights[n] for n in names}}

    def _step(self, names: list[str], eager: bool = False) -> dict[str, torch.Tensor]:
        """One optimiser step over `accumulate` micro-batches of tasks `names` (`train.task_sampling`). Its
        losses and gradient norm stay tensors on the device: nothing here waits for a GPU to finish.
        `eager`: not through `train.compile` (under the FLOP counter, whose dispatch mode would make dynamo
        skip the model for good)."""
        tc = self.config.train
        per_task = self.weighting.per_task_gradients  # PCGrad, GradNorm: one gradient per task, reduced here
        compiled = None if eager else self.compiled
        net = self.model if per_task else next(m for m in (compiled, self.ddp, self.model) if m is not None)
        totals: dict[str, torch.Tensor] = {}
        task_grads: dict[str, torch.Tensor] = {}
        for micro in range(tc.accumulate):
            batches = self._next_batches(names)
            sync = micro == tc.accumulate - 1 or per_task
            with self._gradient_sync(sync):
                with self._autocast():
                    outputs = net(batches)
                    losses = {n: o["loss"] for n, o in outputs.items()}
                    if per_task:
                        loss = sum(self.weighting.loss_weight(n) * value for n, value in losses.items())
                    else:
                        loss = self.weighting(losses)
                if per_task:
                    self._add_task_gradients(losses, task_grads)
                else:
                    (loss / tc.accumulate).backward()
            for name, value in {**{f"loss/{n}": v for n, v in losses.items()}, "loss": loss}.items():
                totals[name] = totals.get(name, 0.0) + value.detach().float() / tc.accumulate
        if per_task:
            reduced = self._numbers(totals)
            self._set_combined_gradient(task_grads, {n: reduced[f"loss/{n}"] for n in task_grads})
        for p in self.replicated:  # outside DDP's and FSDP's reduction: averaged here
            if p.grad is not None:
                p.grad = all_reduce_mean(p.grad)
        clip = clip_grad_norm if self.sharded else torch.nn.utils.clip_grad_norm_
        totals["grad_norm"] = clip(list(self.model.parameters()), tc.grad_clip or float("inf"))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if isinstance(self.weighting, GradNorm):
            self.weighting.renormalise()
        return totals

    def _gradient_sync(self, sync: bool):
        """A context in which backward reduces gradients over processes only when `sync` (the last
        accumulation micro-step): DDP's `no_sync`, FSDP's `set_requires_gradient_sync`."""
        if self.sharded:
            self.model.set_requires_gradient_sync(sync)
        return nullcontext() if sync or self.ddp is None else self.ddp.no_sync()

    def _numbers(self, totals: dict[str, torch.Tensor]) -> dict[str, float]:
        """`totals` averaged over processes, as numbers: one all-reduce on the device, one copy to the host."""
        stacked = all_reduce_mean(torch.stack([totals[k].detach().float().reshape(()) for k in totals]))
        return dict(zip(totals, stacked.tolist()))

    def _trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def _add_task_gradients(self, losses: dict[str, torch.Tensor], into: dict[str, torch.Tensor]) -> None:
        """Add each task's gradient of weight · loss / accumulate, flattened over the trainable parameters."""
        params, scale = self._trainable(), 1 / self.config.train.accumulate
        for i, (name, loss) in enumerate(losses.items()):
            grads = torch.autograd.grad(self.weighting.loss_weight(name) * loss * scale, params,
                                        retain_graph=i < len(losses) - 1, allow_unused=True)
            flat = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])
            into[name] = into[name] + flat if name in into else flat

    def _set_combined_gradient(self, task_grads: dict[str, torch.Tensor], losses: dict[str, float]) -> None:
        """Average each task's gradient over processes, combine them (PCGrad, GradNorm), write `.grad`."""
        params = self._trainable()
        shared = torch.cat([torch.full((p.numel(),), name.startswith("backbone."), device=self.device)
                            for name, p in self.model.named_parameters() if p.requires_grad])
        task_grads = {n: all_reduce_mean(g) for n, g in task_grads.items()}
        total = self.weighting.combine_gradients(task_grads, losses, shared, self.step)
        offset = 0
        for p in params:
            p.grad = total[offset:offset + p.numel()].view_as(p).clone()
            offset += p.numel()

    def validate(self) -> dict[str, dict[str, float]]:
        """Each task scored on its own validation records (`tasks.NAME.data.val`, else `data.val`)."""
        records = {name: r for name, r in self.val_records.items() if r}
        if not records:
            return {}
        with gathered(self.model):  # every process scores every record with the whole model
            return evaluate(self.system, records, self.config.train.eval_batch_size, self.device)

    def _select(self, val: dict[str, dict[str, float]]) -> bool:
        """Save the model as the best when `train.select`'s metric improved; True when training should stop."""
        if self.tracker is None:
            return False
        if self.tracker.update(self.step, val):
            weights = self._whole_weights()
            if self.dist.is_main:
                save_state_dict(weights, self.out / BEST_DIR / WEIGHTS)
            barrier()
            self.log(f"best {self.tracker.metric} so far: {self.tracker.best:.4f} at step {self.step}")
        return self.tracker.should_stop

    def _whole_weights(self) -> dict[str, torch.Tensor]:
        """The model's whole weights with LoRA merged (on every process: sharded weights are gathered)."""
        if not self.sharded:
            return merged_state_dict(self.model)
        whole = whole_state_dict(self.model)  # on the main process
        if not adapted_layers(self.model):
            return whole
        with gathered(self.model):  # the adapters' whole weights for LoRA's merge
            return merged_state_dict(self.model, whole) if self.dist.is_main else {}

    def save(self) -> None:
        """A checkpoint of step `self.step` (every process calls it): the whole weights and the optimiser
        (`checkpoint.save_checkpoint`), or under FSDP each process's shards (`sharding.save_sharded`)."""
        tc = self.config.train
        state = {"step": self.step, "rng": torch.get_rng_state(), "weighting": self.weighting.state_dict()}
        if self.streams is not None:  # shards were streamed by this many processes × workers
            state["streams"] = self.streams
        if self.tracker is not None:
            state["best"] = self.tracker.state_dict()
        if self.sharded:
            save_sharded_checkpoint(self.out / CHECKPOINTS, self.step, lambda folder: save_sharded(
                folder, self.model, self.optimizer, self.weighting), state, tc.keep_checkpoints, main=self.dist.is_main)
        elif self.dist.is_main:
            save_checkpoint(self.out / CHECKPOINTS, self.step, self.model,
                            {**state, "optimizer": self.optimizer.state_dict()}, tc.keep_checkpoints)
        barrier()

    def fit(self) -> Path:
        """Run to `train.max_steps`, validate, export; returns the exported model folder."""
        tc = self.config.train
        self.loggers = make_loggers(tc.loggers, self.out, self.config.to_dict(), tc.wandb) if self.dist.is_main else []
        try:
            return self._fit()
        finally:
            for logger in self.loggers:
                logger.close()

    def _fit(self) -> Path:
        tc = self.config.train
        self.model.train()
        progress = Progress(tc.max_steps, self.step, enabled=tc.progress and self.dist.is_main, log=self.log)
        self._restart_clock()
        with progress:
            while self.step < tc.max_steps:
                self.lr = lr_at(self.step, lr=tc.lr, warmup_steps=tc.warmup_steps, max_steps=tc.max_steps,
                                min_lr_ratio=tc.min_lr_ratio)
                for group in self.optimizer.param_groups:
                    group["lr"] = self.lr * group.get("lr_mult", 1.0)
                logs = (self.step + 1) % tc.log_every == 0 or self.step + 1 == tc.max_steps
                names = self.sampler.tasks_at(self.step)
                weights = self.weighting.weights() if logs else {}  # the weights this step trains with
                counting = not self.flops.known(names)  # the step's FLOPs, once per set of tasks
                with self.flops.count(names) if counting else nullcontext():
                    totals = self._step(names, eager=counting)
                self.flops_done += self.flops[names]
                self.step += 1
                progress.update(self.step, self._log_step(totals, weights) if logs else None)
                stop = False
                if tc.val_every and self.step % tc.val_every == 0 and self.step < tc.max_steps:
                    val = self.validate()
                    self._log_metrics({"step": self.step, "val": val})
                    stop = self._select(val)
                    self.model.train()
                if self.step % tc.ckpt_every == 0 or self.step == tc.max_steps or stop:
                    self.save()
                if stop:
                    self.log(f"early stop at step {self.step}: no better {self.tracker.metric} in "
                             f"{self.tracker.patience} validations")
                    return self.export()
                if self.stop_at is not None and self.step >= self.stop_at:
                    return self.out / MODEL_DIR
                if self.step % tc.ckpt_every == 0 or (tc.val_every and self.step % tc.val_every == 0):
                    self._restart_clock()  # the rate is training's, not validation's or saving's
        val = self.validate()
        if val:
            self._log_metrics({"step": self.step, "val": val})
            self.log(format_results(val, "validation"))
            self._select(val)
        return self.export()

    def _restart_clock(self) -> None:
        self._clock = (self.step, time.perf_counter(), self.data_wait, self.flops_done)
        self.tokens.zero_()

    def samples_per_step(self) -> int:
        """Training examples one optimiser step reads, over all processes: a batch per group of tasks that
        share batches (`task_sampling: all`; tasks sharing one count it once), else the one drawn task's."""
        tc = self.config.train
        return tc.batch_size * (len(self.loaders) if tc.task_sampling == "all" else 1)

    def _log_step(self, totals: dict[str, torch.Tensor], weights: dict[str, float]) -> dict[str, float]:
        """The step's losses (the one wait for the device between logs), with the samples/s, text tokens/s,
        share of time spent waiting for data and MFU since the last log line; written to `metrics.jsonl`."""
        tc = self.config.train
        values = self._numbers({**totals, "tokens": self.tokens})
        tokens = values.pop("tokens") * self.dist.world_size  # every process's
        step, started, waited, flops = self._clock
        elapsed = max(time.perf_counter() - started, 1e-9)
        figures = {"samples_per_s": (self.step - step) * self.samples_per_step() / elapsed,
                   "data_wait": (self.data_wait - waited) / elapsed}
        if tokens:
            figures["tokens_per_s"] = tokens / elapsed
        if self.peak_tflops:  # this process's FLOPs on its own chip
            figures["mfu"] = (self.flops_done - flops) / elapsed / (self.peak_tflops * 1e12)
        self._restart_clock()
        self._log_metrics({"step": self.step, "lr": self.lr, **figures, **values,
                           **{f"weight/{n}": w for n, w in weights.items()}})
        return {**values, **figures}

    def export(self) -> Path:
        """Write the weights beside the config, tokenizer and vocabularies in `model/`: the best validation's
        under `train.select`, else the last; LoRA adapters merged into their layers."""
        folder, best = self.out / MODEL_DIR, self.out / BEST_DIR / WEIGHTS
        if self.tracker is not None and self.tracker.best_step is not None and best.is_file():
            if self.dist.is_main:
                save_state_dict(load_file(str(best)), folder / WEIGHTS)
            self.log(f"exported the best model: step {self.tracker.best_step} "
                     f"({self.tracker.metric} {self.tracker.best:.4f})")
        else:
            weights = self._whole_weights()
            if self.dist.is_main:
                save_state_dict(weights, folder / WEIGHTS)
        barrier()
        return folder


def train(config: Config, out: str | Path, *, resume: bool = False, log: Callable[[str], None] = print) -> Path:
    """Train `config` into the run folder `out`; returns the exported model folder."""
    return Trainer(config, Path(out), resume=resume, log=log).fit()
