"""Is data loading the bottleneck? Decode + preprocess throughput of video clips next to training throughput.

Synthesises audio-visual clips (or uses --data), builds the model of a config, then measures in one process:
- decode + preprocess of one clip, cold (decoded: the first epoch) and cached (later epochs), clips/s;
- a training step as the trainer takes it: loading one batch for every task through the DataLoaders
  (the config's data.num_workers), in the first epoch and later, and forward + backward + AdamW on
  pre-loaded batches; the share of a step spent loading.
Loading is not the bottleneck when it is a small share of the step. The last line printed is one JSON
object with the figures.

    python benchmarks/av_loading.py [--config configs/shapes-av.yaml] [--clips 256] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from polymodal.builders import build_system
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
    parser.add_argument("--config", default=None, help="default: the shipped shapes-av.yaml")
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
        config = load_config(args.config or shipped_config("shapes-av.yaml"),
                             [f"data.train={manifest}", f"data.val={manifest}", f"data.test={manifest}"])
        system = build_system(config, records)
        task = next(iter(system.model.tasks.values()))  # video QA: video, sound and question
        dataset = TaskDataset(records, task.data, system.processors, seed=0)
        cold = _clips_per_s(dataset, len(records))  # first pass: decodes every clip (and fills the cache)
        cached = _clips_per_s(dataset, len(records))
        batch_size = config.train.batch_size
        steps = len(records) // batch_size
        # A training step as the trainer takes it: one batch from every task's loader (the processors,
        # and so the decoded-media cache, are shared by the tasks), then forward + backward + AdamW.
        system = build_system(config, records)  # fresh processors: the first pass starts with empty caches

        def loaders(epoch: int) -> list:
            out = []
            for task in system.model.tasks.values():
                dataset = TaskDataset(records, task.data, system.processors, seed=0)
                out.append(iter(torch.utils.data.DataLoader(
                    dataset, batch_size=batch_size, collate_fn=dataset.collate, num_workers=config.data.num_workers,
                    sampler=[(epoch, i) for i in range(steps * batch_size)])))
            return out

        def load_all(epoch: int) -> tuple[list[dict], float]:
            its, batches = loaders(epoch), []
            start = time.perf_counter()
            for _ in range(steps):
                batches.append({name: next(it) for name, it in zip(system.model.tasks, its)})
            return batches, (time.perf_counter() - start) / steps

        batches, load_first = load_all(1)  # decodes every clip: the first epoch
        _, load_later = load_all(2)  # from the cache: every later epoch (in-process cache: num_workers 0)
        model = system.model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(batch: dict) -> None:
            losses = model(batch)
            sum(out["loss"] for out in losses.values()).backward()
            optimizer.step()
            optimizer.zero_grad()

        for warm in range(2):
            step(batches[warm % len(batches)])
        start = time.perf_counter()
        for index in range(args.steps):
            step(batches[index % len(batches)])
        train_step = (time.perf_counter() - start) / args.steps
        samples = batch_size * len(system.model.tasks)
    first_share = load_first / (load_first + train_step)
    later_share = load_later / (load_later + train_step)
    print(f"{'per clip (video + sound + text)':40}{'clips / s':>12}")
    print(f"{'  decode + preprocess, cold':40}{cold:>12.1f}")
    print(f"{'  decode + preprocess, cached':40}{cached:>12.1f}")
    print(f"{'per training step (' + str(len(system.model.tasks)) + ' tasks x ' + str(batch_size) + ')':40}"
          f"{'ms':>12}")
    print(f"{'  loading, first epoch':40}{1000 * load_first:>12.1f}")
    print(f"{'  loading, later epochs':40}{1000 * load_later:>12.1f}")
    print(f"{'  forward + backward + AdamW':40}{1000 * train_step:>12.1f}   ({samples / train_step:.0f} samples/s)")
    workers = config.data.num_workers
    print(f"loading takes {100 * first_share:.0f}% of a step in the first epoch and {100 * later_share:.0f}% after "
          f"(num_workers={workers}: {'loading runs between steps' if workers == 0 else 'overlapped'})")
    print(json.dumps({"decode_cold_clips_per_s": round(cold, 1), "decode_cached_clips_per_s": round(cached, 1),
                      "load_ms_per_step_first_epoch": round(1000 * load_first, 1),
                      "load_ms_per_step_later": round(1000 * load_later, 1),
                      "train_ms_per_step": round(1000 * train_step, 1),
                      "train_samples_per_s": round(samples / train_step, 1),
                      "loading_share_first_epoch": round(first_share, 3),
                      "loading_share_later": round(later_share, 3), "num_workers": workers,
                      "clips": len(records), "batch_size": batch_size, "tasks": len(system.model.tasks)}))

if __name__ == "__main__":
    main()
