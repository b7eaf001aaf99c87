"""`polymodal demo`: the built-in benchmark end to end — synthesise, pre-train, fine-tune, evaluate, report."""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .api import LoadedModel, load
from .config import load_config
from .data.manifest import read_manifest
from .data.shapes import synthesize
from .report import write_report
from .training.trainer import train

# (run name, shipped config, what the run demonstrates, extra overrides; {clip} is the clip run folder)
RECIPES = [
    ("clip", "shapes-clip.yaml", "dual encoder, contrastive pre-training (late fusion)", []),
    ("vqa", "shapes-vqa.yaml", "joint transformer fine-tuned for VQA from the clip encoders (early fusion)",
     ["train.init_from={clip}"]),
]
SIZES = {"n_train": 20000, "n_val": 500, "n_test": 500}
QUICK = {"n_train": 600, "n_val": 100, "n_test": 100, "max_steps": 40}


def shipped_config(name: str) -> Path:
    """A config shipped inside the package (`configs/` in a checkout is the same folder)."""
    return Path(str(resources.files("polymodal") / "configs" / name))


def _vqa_examples(model: LoadedModel, records: list[dict[str, Any]], n: int = 12) -> list[dict[str, Any]]:
    by_type: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_type.setdefault(r.get("question_type", "?"), []).append(r)
    chosen = [r for i in range(n) for rs in by_type.values() if i < len(rs) for r in [rs[i]]][:n]
    answers = model.predict(next(iter(model.system.vocab)), chosen) if chosen else []
    return [{"image": r["image"], "question": r["question"], "answer": r["answer"], "prediction": p}
            for r, p in zip(chosen, answers)]


def _retrieval_examples(model: LoadedModel, records: list[dict[str, Any]], n: int = 4,
                        k: int = 5) -> list[dict[str, Any]]:
    gallery = records[:200]
    examples = []
    for query in gallery[:n]:
        ranked = model.retrieve(query["text"], [r["image"] for r in gallery], k=k)
        examples.append({"query": query["text"], "retrieved": [
            {"image": gallery[i]["image"], "score": s, "match": gallery[i]["text"] == query["text"]}
            for i, s in ranked]})
    return examples


def run_demo(out: Path, *, quick: bool = False) -> Path:
    """Run the demo into `out`; returns the report path."""
    console = Console()
    started = time.perf_counter()
    data = out / "data"
    sizes = {k: QUICK[k] for k in SIZES} if quick else SIZES
    stats_path = data / "stats.json"
    if not stats_path.exists() or json.loads(stats_path.read_text())["counts"]["train"] != sizes["n_train"]:
        console.rule("[bold]synthesise the shapes benchmark")
        synthesize(data, **sizes)
    stats = json.loads(stats_path.read_text())
    test = read_manifest(data / "test.jsonl")

    runs, results, timings = {}, {}, {}
    for name, config_name, what, overrides in RECIPES:
        console.rule(f"[bold]train {name}: {what}")
        sets = [f"data.train={data / 'train.jsonl'}", f"data.val={data / 'val.jsonl'}",
                f"data.test={data / 'test.jsonl'}", *(o.format(clip=out / "clip") for o in overrides)]
        if quick:
            sets += [f"train.max_steps={QUICK['max_steps']}", "train.warmup_steps=10", "train.ckpt_every=1000"]
        config = load_config(shipped_config(config_name), sets)
        t0 = time.perf_counter()
        runs[name] = out / name
        train(config, runs[name])
        timings[name] = time.perf_counter() - t0
        results[name] = load(runs[name]).evaluate(test)

    baselines = {"vqa": {"accuracy": stats["baselines"]["overall"],
                         **{f"accuracy/{t}": v for t, v in stats["baselines"].items() if t != "overall"}}}
    table = Table(title="Polymodal demo — test split")
    for column in ("run", "task", "metric", "value", "majority baseline"):
        table.add_column(column)
    for run, tasks in results.items():
        for task, metrics in tasks.items():
            for metric, value in metrics.items():
                if metric != "n":
                    base = baselines.get(task, {}).get(metric)
                    table.add_row(run, task, metric, f"{value:.3f}", "" if base is None else f"{base:.3f}")
    console.print(table)

    vqa_model, clip_model = load(runs["vqa"]), load(runs["clip"])
    total = time.perf_counter() - started
    notes = [f"Total time {total:.0f} s on this machine ("
             + ", ".join(f"{k} training {v:.0f} s" for k, v in timings.items()) + ").",
             "Data: the built-in shapes benchmark, " + " / ".join(f"{stats['counts'][k]} {k}" for k in
                                                                ("train", "val", "test")) + " examples."]
    report = write_report(out / "report", runs=runs, results=results, baselines=baselines,
                          vqa_examples=_vqa_examples(vqa_model, test),
                          retrieval_examples=_retrieval_examples(clip_model, test), notes=notes)
    console.print(f"report: {report}   (total {total:.0f} s)")
    return report
