"""Loading from a manifest of files against loading from WebDataset shards: samples/s, and per loading core.

Synthesises the built-in benchmark (or uses --data), writes its training manifest as shards
(`polymodal data shard`'s code), builds the model of a config, then, for each number of loader workers,
times the trainer's two loaders over the same records: the manifest's (a map-style dataset opening one
file per image) and the shards' (a stream reading tar files through a shuffle buffer). It also times a
resume: how fast a stream reads again, without decoding, the samples it had given before a checkpoint.
The last line printed is one JSON object with the figures.

    python benchmarks/shard_loading.py [--config configs/shapes-vqa.yaml] [--records 2000] [--batches 40]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from polymodal.builders import build_system
from polymodal.config import load_config
from polymodal.data.loader import StepSampler, TaskDataset, train_loader
from polymodal.data.manifest import read_manifest
from polymodal.data.shapes import synthesize
from polymodal.data.shards import shard_urls, write_shards
from polymodal.data.stream import ShardStream
from polymodal.demo import shipped_config


def _rate(loader, batches: int, batch_size: int, workers: int) -> float:
    """Samples/s over `batches` batches, after each worker's first (its start-up, and a stream's filling
    of its shuffle buffer), which are not timed."""
    iterator = iter(loader)
    for _ in range(max(1, workers)):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="default: the shipped shapes-vqa.yaml")
    parser.add_argument("--data", default=None, help="a training manifest (default: synthesise --records)")
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--shard-size", type=int, default=250)
    parser.add_argument("--workers", default="0,2", help="loader workers to try, comma-separated")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(args.data) if args.data else None
        if manifest is None:
            synthesize(tmp, n_train=args.records, n_val=0, n_test=0, log=lambda _: None)
            manifest = Path(tmp) / "train.jsonl"
        records = read_manifest(manifest)[: args.records]
        index = json.loads(write_shards(records, Path(tmp) / "shards", args.shard_size, log=lambda _: None).read_text())
        urls = shard_urls(str(Path(tmp) / "shards" / index["pattern"]))
        config = load_config(args.config or shipped_config("shapes-vqa.yaml"),
                             [f"data.train={manifest}", f"data.val={manifest}", f"data.test={manifest}"])
        system = build_system(config, records)
        task = next(iter(system.model.tasks.values()))
        batch = config.train.batch_size
        figures: dict = {"records": len(records), "shards": len(urls), "batch_size": batch,
                         "media_bytes": sum(os.path.getsize(r["image"]) for r in records if "image" in r),
                         "cores": len(os.sched_getaffinity(0))}
        for workers in (int(w) for w in args.workers.split(",")):
            dataset = TaskDataset(records, task.data, system.processors, seed=0)
            sampler = StepSampler(len(records), batch, seed=0, max_steps=args.batches + max(1, workers))
            files = _rate(train_loader(dataset, sampler, workers), args.batches, batch, workers)
            stream = ShardStream(urls, TaskDataset([], task.data, system.processors, seed=0), batch,
                                 keep=task.data.usable, seed=0, buffer=config.data.shuffle_buffer)
            shards = _rate(DataLoader(stream, batch_size=None, num_workers=workers,
                                      prefetch_factor=4 if workers else None), args.batches, batch, workers)
            cores = max(1, workers)
            figures[f"workers_{workers}"] = {"files_samples_per_s": round(files, 1),
                                             "shards_samples_per_s": round(shards, 1),
                                             "files_per_core": round(files / cores, 1),
                                             "shards_per_core": round(shards / cores, 1)}
            print(f"{workers} workers: files {files:,.0f} samples/s ({files / cores:,.0f} per core), "
                  f"shards {shards:,.0f} samples/s ({shards / cores:,.0f} per core)")
        # a resume at the end of an epoch: the stream reads its samples again without decoding them
        stream = ShardStream(urls, TaskDataset([], task.data, system.processors, seed=0), batch,
                             keep=task.data.usable, seed=0, buffer=config.data.shuffle_buffer)
        shuffled = stream.shuffled(0, 1)
        skip = len(records) - config.data.shuffle_buffer
        start = time.perf_counter()
        for _ in range(skip):
            next(shuffled)
        replay = skip / (time.perf_counter() - start)
        figures["resume_replay_samples_per_s"] = round(replay, 1)
        print(f"resume: {replay:,.0f} samples/s read again (not decoded) to reach where a stream stopped")
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
