"""Is data loading the bottleneck? Decode + preprocess throughput of video clips next to training throughput.

Synthesises audio-visual clips (or uses --data), builds the model of a config, then measures in one process:
- decode + preprocess, cold (every clip decoded: the first epoch) and cached (later epochs), clips/s;
- the DataLoader as training uses it (the config's data.num_workers), clips/s;
- training steps on pre-loaded batches (forward, backward, AdamW), samples/s.
Loading is not the bottleneck when the loader delivers more clips per second than training consumes.
The last line printed is one JSON object with the figures.

    python benchmarks/av_loading.py [--config configs/shapes-video-qa.yaml] [--clips 256] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from polymodal.build import build_system
from polymodal.config import load_config
from polymodal.data.loader import TaskDataset
from polymodal.data.manifest import read_manifest
from polymodal.data.shapes_av import synthesize_av
from polymodal.demo import shipped_config


def _clips_per_s(dataset: TaskDataset, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        dataset[(0, i)]  # (epoch, index): a training item, augmentation and random frames included
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="default: the shipped shapes-video-qa.yaml")
    parser.add_argument("--data", default=None, help="an av manifest (default: synthesise --clips clips)")
    parser.add_argument("--clips", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(args.data) if args.data else None
        if manifest is None:
            synthesize_av(tmp, n_train=args.clips, n_val=0, n_test=0, log=lambda _: None)
            manifest = Path(tmp) / "av" / "train.jsonl"
        records = read_manifest(manifest)[: args.clips]
        config = load_config(args.config or shipped_config("shapes-video-qa.yaml"),
                             [f"data.train={manifest}", f"data.val={manifest}", f"data.test={manifest}"])
        system = build_system(config, records)
        name, task = next(iter(system.model.tasks.items()))
        dataset = TaskDataset(records, task, system.processors, seed=0)
        cold = _clips_per_s(dataset, len(records))  # first pass: decodes every clip (and fills the cache)
        cached = _clips_per_s(dataset, len(records))
        batch_size = config.train.batch_size
        system = build_system(config, records)  # fresh processors: the loader starts with empty caches
        dataset = TaskDataset(records, system.model.tasks[name], system.processors, seed=0)
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=dataset.collate,
                                             num_workers=config.data.num_workers,
                                             sampler=[(1, i) for i in range(len(records))])
        start = time.perf_counter()
        batches = list(loader)
        loader_rate = len(records) / (time.perf_counter() - start)
        model = system.model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        for warm in range(2):
            loss = model({name: batches[warm % len(batches)]})[name]["loss"]
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        start = time.perf_counter()
        for step in range(args.steps):
            loss = model({name: batches[step % len(batches)]})[name]["loss"]
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        train_rate = args.steps * batch_size / (time.perf_counter() - start)
    print(f"{'':32}{'clips or samples / s':>22}")
    print(f"{'decode + preprocess, cold':32}{cold:>22.1f}")
    print(f"{'decode + preprocess, cached':32}{cached:>22.1f}")
    print(f"{'loader (num_workers=' + str(config.data.num_workers) + ', first epoch)':32}{loader_rate:>22.1f}")
    print(f"{'training steps':32}{train_rate:>22.1f}")
    verdict = "loading is NOT the bottleneck" if cached > train_rate else "loading IS the bottleneck"
    print(f"{verdict} after the first epoch (cached {cached / train_rate:.1f}x training speed)")
    print(json.dumps({"decode_cold_clips_per_s": round(cold, 1), "decode_cached_clips_per_s": round(cached, 1),
                      "loader_first_epoch_clips_per_s": round(loader_rate, 1),
                      "train_samples_per_s": round(train_rate, 1), "num_workers": config.data.num_workers,
                      "clips": len(records), "batch_size": batch_size}))


if __name__ == "__main__":
    main()
