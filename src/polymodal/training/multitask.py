"""Multi-task data: each task's manifests, which tasks train at a step, and batches shared between tasks.

A task reads `tasks.NAME.data.{train,val,test}` where given, else the `data:` section's manifest. Which
tasks train at step k is a pure function of (seed, k), so a resumed run draws as an uninterrupted one; a
task's data stream advances only at the steps it is drawn (its loader starts at the number of earlier draws).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from ..config import Config
from ..data.loader import TaskDataset, collate_present
from ..data.manifest import read_records, subset
from ..data.task import TaskData


def task_manifest(config: Config, task: str, split: str) -> str | None:
    """The manifest `task` reads for `split`: its own `tasks.NAME.data.<split>`, else `data.<split>`."""
    own = config.tasks[task].get("data") or {}
    return own.get(split) or getattr(config.data, split)


def task_splits(config: Config, split: str, log: Callable[[str], None]) -> dict[str, list[dict[str, Any]]]:
    """Task name → the records of its `split` manifest or shards (empty when it has none); each read once,
    so tasks on the same manifest get the very same list."""
    read: dict[str, list[dict[str, Any]]] = {}
    out = {}
    for name in config.tasks:
        path = task_manifest(config, name, split)
        if path is not None and path not in read:
            # a training split of shards streams its media: here only its text (vocabularies, counts)
            read[path] = read_records(path, media=split != "train", on_error=config.data.on_error, log=log)
            if split == "train" and config.data.train_fraction < 1:
                kept = subset(read[path], config.data.train_fraction)
                log(f"data.train_fraction {config.data.train_fraction:g}: {len(kept)} of {len(read[path])} "
                    f"training records of {path}")
                read[path] = kept
        out[name] = read[path] if path is not None else []
    return out


def distinct(lists: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The records of several lists, each list once (tasks sharing a manifest share its list)."""
    seen, out = set(), []
    for records in lists:
        if id(records) not in seen:
            seen.add(id(records))
            out.extend(records)
    return out


class TaskSampler:
    """Which tasks train at each optimiser step.

    Args:
        names: the tasks, in config order.
        sizes: each task's number of training records.
        mode: `all` (every task every step), `round_robin` (one per step in turn), `proportional` (one per
            step, drawn ∝ n_i) or `temperature` (∝ n_i^(1/T): T=1 is proportional, T→∞ uniform).
        seed: the run's seed; draw k uses a generator seeded by (seed, k) alone.
    """

    def __init__(self, names: list[str], sizes: list[int], mode: str, *, seed: int, temperature: float = 2.0):
        self.names, self.mode, self.seed = list(names), mode, seed
        power = 1.0 if mode == "proportional" else 1.0 / temperature
        weights = torch.tensor(sizes, dtype=torch.float64) ** power
        self.probs = weights / weights.sum()

    def tasks_at(self, step: int) -> list[str]:
        if self.mode == "all":
            return self.names
        if self.mode == "round_robin":
            return [self.names[step % len(self.names)]]
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step + 0x7A5C)
        return [self.names[int(torch.multinomial(self.probs, 1, generator=generator))]]

    def draws_before(self, step: int) -> dict[str, int]:
        """How often each task was drawn at steps 0 .. step-1: where its data stream resumes."""
        if self.mode == "all":
            return dict.fromkeys(self.names, step)
        counts = dict.fromkeys(self.names, 0)
        for k in range(step):
            for name in self.tasks_at(k):
                counts[name] += 1
        return counts


def share_key(data: TaskData, manifest: str | None, dropout: dict[str, float]) -> tuple | None:
    """Tasks with equal keys read the same examples (None: a task that builds its own never shares)."""
    if not data.plain_examples:
        return None
    dropped = tuple(sorted((m, p) for m, p in dropout.items() if m in data.inputs
                           and m not in data.required_modalities and p > 0))
    return manifest, tuple(data.inputs.items()), dropped


def batch_groups(data: dict[str, TaskData], records: dict[str, list[dict[str, Any]]], manifests: dict[str, str | None],
                 dropout: dict[str, float]) -> list[list[str]]:
    """Tasks (in config order) that can take one batch: same manifest, same usable records, same
    `inputs`, the default `example` and the same modality dropout. Tasks that corrupt their inputs still
    share the batch; the model gives them a pass of their own."""
    groups: dict[Any, list[str]] = {}
    for name, task_data in data.items():
        key = share_key(task_data, manifests[name], dropout)
        groups.setdefault((name,) if key is None else (key, tuple(map(id, records[name]))), []).append(name)
    return list(groups.values())


class SharedTaskDataset(TaskDataset):
    """One dataset for several tasks that read the same records the same way: the inputs are prepared
    once, each task's target beside them (`targets`: task name → collated targets)."""

    def __init__(self, records: list[dict[str, Any]], tasks: dict[str, TaskData], processors: dict, seed: int = 0,
                 modality_dropout: dict[str, float] | None = None):
        super().__init__(records, next(iter(tasks.values())), processors, seed=seed, modality_dropout=modality_dropout)
        self.tasks = tasks

    def item(self, records: list[dict[str, Any]], index: int, epoch: int, draw: int) -> dict[str, Any]:
        item = super().item(records, index, epoch, draw)
        return {**item, "target": {name: data.target(item["record"]) for name, data in self.tasks.items()}}

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        inputs = {m: collate_present(self.processors[m], [it["inputs"][m] for it in items]) for m in self.processors}
        targets = {name: data.collate_targets([it["target"][name] for it in items])
                   for name, data in self.tasks.items()}
        return {"inputs": inputs, "target": targets, "index": torch.as_tensor([it["index"] for it in items])}
