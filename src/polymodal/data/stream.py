"""Training from WebDataset shards: endless streams, split by process and loader worker, shuffled through a
buffer, resumable at the sample where a run stopped.

With P processes of W loader workers each (W = 1 when loading in the training process) there are P·W
streams; stream s = rank·W + worker. Each epoch the shards are permuted by (seed, epoch) and stream s
reads shards s, s + P·W, s + 2·P·W, ... of that order; with fewer shards than streams, every stream
reads every shard and keeps every (P·W)-th sample. Its samples pass through a shuffle buffer drawn by a
generator seeded by (seed, s), and leave as micro-batches.

A DataLoader asks its workers in turn, so a process's micro-batch j comes from worker j mod W. A run
resumed at micro-batch m starts worker w as stream (w + m) mod W, the one whose turn it is, and each
stream reads again, without decoding, the samples it had given before: the batches are those of an
uninterrupted run with the same P and W.
"""

from __future__ import annotations

import random
import tarfile
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..errors import DataError
from .loader import TaskDataset
from .shards import record_of, samples


class ShardStream(IterableDataset):
    """One process's micro-batches from tar shards, for one task (or a group of tasks sharing batches).

    Args:
        urls: the shards (`shards.shard_urls`).
        dataset: prepares and collates examples (its own records are not used).
        micro_batch: examples per micro-batch.
        keep: which records the task can use (its fields; `data.train_fraction`'s subset).
        seed: the run's seed.
        rank, world_size: this process, of how many.
        start: micro-batches this process had already taken (a resumed run's step × accumulation).
        buffer: the shuffle buffer's size in samples (the larger, the closer to a uniform shuffle).
    """

    def __init__(self, urls: list[str], dataset: TaskDataset, micro_batch: int, *, keep: Callable[[dict], bool],
                 seed: int, rank: int = 0, world_size: int = 1, start: int = 0, buffer: int = 1000):
        if buffer < 1:
            raise ValueError(f"data.shuffle_buffer: expected at least 1 sample, got {buffer}")
        self.urls, self.dataset, self.micro_batch, self.keep = list(urls), dataset, micro_batch, keep
        self.seed, self.rank, self.world_size, self.start, self.buffer = seed, rank, world_size, start, buffer

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        own = (worker + self.start) % workers  # the worker asked first now is the one whose turn it is
        given = max(0, -(-(self.start - own) // workers))  # micro-batches j < start with j mod W = own
        stream, streams = self.rank * workers + own, self.world_size * workers
        shuffled = self.shuffled(stream, streams)
        for _ in range(given * self.micro_batch):  # read again, not decoded: where this stream stopped
            next(shuffled)
        while True:
            items = []
            for _ in range(self.micro_batch):
                pool, index, epoch, draw = next(shuffled)
                record = pool[index]
                try:
                    items.append(self.dataset.item(pool, index, epoch, draw))
                except DataError as error:
                    raise DataError(f"{record.get('_source', '?')}: {error}") from None
            yield self.dataset.collate(items)

    def records(self, stream: int, streams: int) -> Iterator[tuple[int, dict[str, Any]]]:
        """(epoch, record) of stream `stream` of `streams`, epoch after epoch, without end. An epoch in
        which this stream finds nothing its task can use is skipped (its shards that epoch may hold other
        tasks' records). The trainer has checked that some record is usable; a hundred empty epochs in a
        row (ten per shard past ten shards) means none is, and is an error rather than an endless loop."""
        split_shards = len(self.urls) >= streams
        epoch, empty = 0, 0
        while True:
            order = torch.randperm(len(self.urls), generator=torch.Generator().manual_seed(self.seed * 7919 + epoch))
            urls = [self.urls[i] for i in order.tolist()]
            mine = urls[stream::streams] if split_shards else urls
            found, number = False, 0
            for url in mine:
                try:
                    for sample in samples([url]):
                        number += 1
                        if not split_shards and (number - 1) % streams != stream:
                            continue
                        record = record_of(sample)
                        record["_source"] = f"{url}: sample {sample['__key__']}"
                        if self.keep(record):
                            found = True
                            yield epoch, record
                except (tarfile.TarError, OSError, ValueError) as error:  # a truncated or corrupt shard
                    raise DataError(f"{url}: cannot read this shard ({error})") from None
            empty = 0 if found else empty + 1
            if empty >= max(100, 10 * len(self.urls)):
                raise DataError(f"stream {stream} of {streams} found no sample its task can use in {empty} epochs "
                                f"of its shards ({', '.join(mine[:3])}{' ...' if len(mine) > 3 else ''})")
            epoch += 1

    def shuffled(self, stream: int, streams: int) -> Iterator[tuple[list[dict[str, Any]], int, int, int]]:
        """The stream through its shuffle buffer: (buffer, index, epoch, draw) for each sample leaving it,
        to be prepared before the next is asked for (its place is then taken). `draw`, unique to the
        sample's place in the run's data, seeds its augmentation."""
        rng = random.Random(self.seed * 1_000_003 + stream)
        pool: list[dict[str, Any]] = []
        epochs: list[int] = []
        place = 0
        for epoch, record in self.records(stream, streams):
            if len(pool) < self.buffer:
                pool.append(record)
                epochs.append(epoch)
                continue
            index = rng.randrange(len(pool))
            yield pool, index, epochs[index], place * streams + stream
            place += 1
            pool[index], epochs[index] = record, epoch
