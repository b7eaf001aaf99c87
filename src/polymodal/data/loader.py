"""From records to batches: a dataset per task, a stateless step-indexed sampler, and collation.

The order of examples is a pure function of (seed, step): batch k is the same whether a run got there
uninterrupted, was resumed from a checkpoint, or is split over N data-parallel processes (each takes its
slice of the global batch). Augmentation draws from a generator seeded by (seed, epoch, index), so it
is reproducible too, in any loader worker.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .processor import Processor
from .shards import local_files
from .task import TaskData


class TaskDataset(Dataset):
    """Records → (inputs per modality, target) for one task.

    Args:
        records: manifest records carrying the task's fields.
        task: the task's data side (which fields feed which modality, what the target is): no head,
            so loader workers do not copy its parameters.
        processors: modality → processor.
        seed: base seed for augmentation.
    """

    def __init__(self, records: list[dict[str, Any]], task: TaskData, processors: dict[str, Processor], seed: int = 0,
                 modality_dropout: dict[str, float] | None = None):
        if not isinstance(task, TaskData):
            raise TypeError(f"TaskDataset takes a task's data side (`task.data`), got {type(task).__name__}")
        self.records = records
        self.task = task
        self.processors = {name: processors[name] for name in task.inputs}
        self.seed = seed
        # only modalities the task may do without are dropped
        self.dropout = {m: p for m, p in sorted((modality_dropout or {}).items())
                        if m in task.inputs and m not in task.required_modalities and p > 0}

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (-1, key)
        return self.item(self.records, index, epoch, index)

    def item(self, records: list[dict[str, Any]], index: int, epoch: int, draw: int) -> dict[str, Any]:
        """Example `index` of `records`, prepared; `epoch` -1: evaluation (no augmentation, no dropout),
        else its random draws come from a generator seeded by (seed, epoch, draw). A stream of shards
        passes its shuffle buffer as `records` and the sample's place in the stream as `draw`."""
        generator = None
        if epoch >= 0:
            generator = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) * 10_000_019 + draw)
        record, target = self.task.example(records, index, generator)
        dropped = self._dropped(record, epoch, draw) if generator is not None and self.dropout else set()
        fields = {m: record[field] for m, field in self.task.inputs.items() if field in record and m not in dropped}
        with local_files(fields) as fields:  # media bytes from a shard: readers open paths
            inputs = {m: self.processors[m].prepare(fields[m], generator) if m in fields else None
                      for m in self.task.inputs}
        return {"inputs": inputs, "target": target, "index": index, "record": records[index]}

    def _dropped(self, record: dict[str, Any], epoch: int, index: int) -> set[str]:
        """Modalities to drop from this training example (`train.modality_dropout`), never all of them.

        Drawn from a generator of their own, so turning dropout on leaves the augmentation draws as they were.
        """
        generator = torch.Generator().manual_seed(((self.seed * 1_000_003 + epoch) * 10_000_019 + index) ^ 0x5EED)
        have = [m for m, field in self.task.inputs.items() if field in record]
        dropped = {m for m, p in self.dropout.items() if m in have and float(torch.rand((), generator=generator)) < p}
        return dropped if len(dropped) < len(have) else set()

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        inputs = {m: collate_present(self.processors[m], [it["inputs"][m] for it in items]) for m in self.processors}
        return {
            "inputs": inputs,
            "target": self.task.collate_targets([it["target"] for it in items]),
            "index": torch.as_tensor([it["index"] for it in items]),
        }


def collate_present(processor: Processor, values: list[Any]) -> dict[str, torch.Tensor]:
    """A modality's part of a batch where some examples may lack it (None): those get a copy of a present
    example as filler and `present` (B,) marks them; with none present, only `present` is there."""
    present = [v is not None for v in values]
    if all(present):
        return processor.collate(values)
    if not any(present):
        return {"present": torch.zeros(len(values), dtype=torch.bool)}
    filler = next(v for v in values if v is not None)
    return {**processor.collate([v if v is not None else filler for v in values]),
            "present": torch.tensor(present)}


class StepSampler(Sampler):
    """Yields, for steps start_step, start_step+1, ..., this process's share of each global batch.

    Each epoch is a fresh permutation (seeded by seed and epoch) cut into global batches; the tail that
    does not fill a batch is dropped. Items are (epoch, index) so the dataset can seed augmentation.

    Args:
        num_examples: dataset size (at least one global batch).
        global_batch: examples per step over all processes.
        micro_batches: how many slices each process takes per step (gradient accumulation).
    """

    def __init__(self, num_examples: int, global_batch: int, *, seed: int, start_step: int = 0, rank: int = 0,
                 world_size: int = 1, micro_batches: int = 1, max_steps: int | None = None):
        if global_batch % (world_size * micro_batches):
            raise ValueError(f"batch size {global_batch} is not divisible by processes × accumulation "
                             f"({world_size} × {micro_batches})")
        if num_examples < global_batch:
            raise ValueError(f"{num_examples} examples are fewer than one batch of {global_batch}")
        self.n = num_examples
        self.global_batch = global_batch
        self.seed = seed
        self.start_step = start_step
        self.rank = rank
        self.world_size = world_size
        self.micro_batches = micro_batches
        self.max_steps = max_steps
        self.steps_per_epoch = num_examples // global_batch

    def _permutation(self, epoch: int) -> torch.Tensor:
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 7919 + epoch))

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        micro = self.global_batch // (self.world_size * self.micro_batches)
        step, cached_epoch, perm = self.start_step, -1, None
        while self.max_steps is None or step < self.max_steps:
            epoch, within = divmod(step, self.steps_per_epoch)
            if epoch != cached_epoch:
                perm, cached_epoch = self._permutation(epoch), epoch
            batch = perm[within * self.global_batch:(within + 1) * self.global_batch]
            for m in range(self.micro_batches):
                # global batch = [micro-batch 0 of every rank, micro-batch 1 of every rank, ...]
                start = (m * self.world_size + self.rank) * micro
                yield [(epoch, int(i)) for i in batch[start:start + micro]]
            step += 1

    def __len__(self) -> int:
        if self.max_steps is None:
            raise TypeError("an endless StepSampler has no length")
        return (self.max_steps - self.start_step) * self.micro_batches


def to_device(value: Any, device: torch.device | str) -> Any:
    """A collated batch's part on `device`: a tensor, or mappings of them (inputs per modality, ragged token
    targets and their masks); anything else (prompt ids, record keys) as it is. Copies to a GPU do not
    wait (from pinned memory they overlap compute); copies back to the CPU do, or they could be read
    before they arrive."""
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if not isinstance(value, torch.Tensor):
        return value
    return value.to(device, non_blocking=torch.device(device).type == "cuda")


def train_loader(dataset: TaskDataset, sampler: StepSampler, num_workers: int, pin_memory: bool = False) -> DataLoader:
    """An endless loader over `sampler`'s batches; with workers, each keeps 4 batches ready;
    `pin_memory` (for a GPU) puts batches in page-locked memory, so copies to the GPU overlap compute."""
    # its own generator: starting the loader (which draws worker seeds) must not move the global random
    # state, or a resumed run's dropout would differ from an uninterrupted run's
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=dataset.collate, num_workers=num_workers,
                      persistent_workers=num_workers > 0, prefetch_factor=4 if num_workers else None,
                      pin_memory=pin_memory, generator=torch.Generator().manual_seed(sampler.seed))


def eval_loader(dataset: TaskDataset, batch_size: int, num_workers: int = 0) -> DataLoader:
    """Every record once, in order, without augmentation."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=dataset.collate,
                      num_workers=num_workers)
