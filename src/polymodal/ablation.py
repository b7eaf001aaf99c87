"""`polymodal ablate`: the same encoders, tasks, data, seed and steps under every fusion strategy.

Each variant trains in its own run folder under the output folder, one after another, then is evaluated
on `data.test` (else `data.val`). The results go to `ablation.json` and to `ablation.md`, a table and a
bar plot of every accuracy and recall per task (and question type), with parameters and throughput.
"""

from __future__ import annotations

import copy
import inspect
import json
import time
from pathlib import Path
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt  # noqa: E402

from .build import split_model_spec  # noqa: E402
from .config import Config  # noqa: E402
from .errors import ConfigError  # noqa: E402
from .fusion import FUSIONS  # noqa: E402
from .report import read_metrics  # noqa: E402


def variant_config(config: Config, fusion: str) -> Config:
    """`config` with `model.fusion` of type `fusion`; the settings of the config's own fusion that this
    one also takes (depth, num_heads, dropout, ...) are kept, the rest are the fusion's defaults."""
    if fusion not in FUSIONS:
        raise ConfigError(f"--fusion: expected names from {', '.join(FUSIONS)}, got {fusion!r}")
    model = copy.deepcopy(config.model)
    encoders, tokenizer = model.pop("encoders", None), model.pop("tokenizer", None)
    _, own, _, rest = split_model_spec(model)
    accepted = set(inspect.signature(FUSIONS[fusion]).parameters) - {"modalities", "width"}
    variant = copy.deepcopy(config)
    variant.model = {**rest, "encoders": encoders, "fusion": {"type": fusion, **{k: v for k, v in own.items()
                                                                                 if k in accepted}}}
    if tokenizer is not None:
        variant.model["tokenizer"] = tokenizer
    return variant


def run_ablation(config: Config, fusions: list[str], out: Path, *, log: Callable[[str], None] = print
                 ) -> dict[str, dict[str, Any]]:
    """Train and evaluate every variant; write `out/ablation.json` and `out/ablation.md`; return the results."""
    from .api import load
    from .data.manifest import read_manifest
    from .training.trainer import Trainer

    split = config.data.test or config.data.val
    if split is None:
        raise ConfigError("data.test: the ablation evaluates every variant on a held-out manifest (or data.val)")
    variants = {name: variant_config(config, name) for name in fusions}  # every name checked before training
    records = read_manifest(split, on_error=config.data.on_error, log=log)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, dict[str, Any]] = {}
    for name, variant in variants.items():
        log(f"ablation: {name} ({len(summary) + 1} of {len(variants)})")
        started = time.perf_counter()
        trainer = Trainer(variant, out / name, log=log)
        trainer.fit()
        wall = time.perf_counter() - started
        rates = [r["samples_per_s"] for r in read_metrics(out / name) if "samples_per_s" in r]
        summary[name] = {
            "params": sum(p.numel() for p in trainer.model.parameters()),
            "samples_per_s": rates[-1] if rates else None,
            "wall_s": round(wall, 1),
            "results": load(out / name).evaluate(records, batch_size=config.train.eval_batch_size),
        }
        (out / "ablation.json").write_text(json.dumps(summary, indent=1))  # a killed ablation keeps what it did
    write_ablation_report(summary, out, split)
    return summary


def scores(results: dict[str, dict[str, float]]) -> dict[str, float]:
    """`task/metric` → value for every accuracy and recall (counts left out)."""
    return {f"{task}/{metric}": value for task, metrics in results.items() for metric, value in metrics.items()
            if metric != "n" and (metric.startswith("accuracy") or "R@" in metric)}


def write_ablation_report(summary: dict[str, dict[str, Any]], out: Path, split: str | Path) -> Path:
    """`out/ablation.md`: a table (parameters, throughput, every score) and `out/ablation.png`."""
    names = list(summary)
    columns = sorted({c for v in summary.values() for c in scores(v["results"])})
    lines = [f"# Fusion ablation", "", f"Every variant: the same encoders, tasks, data, seed and steps; "
             f"scores on `{split}`.", "",
             "| fusion | parameters | samples/s | wall s | " + " | ".join(columns) + " |",
             "|---" * (4 + len(columns)) + "|"]
    for name in names:
        v, s = summary[name], scores(summary[name]["results"])
        rate = f"{v['samples_per_s']:.0f}" if v["samples_per_s"] is not None else "—"
        cells = [f"{s[c]:.3f}" if c in s else "—" for c in columns]
        lines.append(f"| {name} | {v['params']:,} | {rate} | {v['wall_s']:.0f} | " + " | ".join(cells) + " |")
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(columns) * max(1, len(names)) / 2), 3.8))
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        s = scores(summary[name]["results"])
        ax.bar([j + i * width for j in range(len(columns))], [s.get(c, 0.0) for c in columns], width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(columns))], columns, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    ax.legend(fontsize=8, ncol=min(6, len(names)))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "ablation.png", dpi=110)
    plt.close(fig)
    lines += ["", "![scores per fusion](ablation.png)", ""]
    (out / "ablation.md").write_text("\n".join(lines))
    return out / "ablation.md"
