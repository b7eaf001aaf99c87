"""`polymodal ablate`: the same encoders, tasks, data, seed and steps under every fusion strategy.

Each variant trains in its own run folder under the output folder, one after another, then is evaluated
on `data.test` (else `data.val`). The results go to `ablation.json` and to `ablation.md`, a table and a
bar plot of every accuracy and recall per task (and question type), with parameters and throughput.
Run again on the same folder, it keeps the variants already evaluated with the same config, resumes one
that was stopped from its last checkpoint, and trains the rest: adding a variant costs only that variant.
"""

from __future__ import annotations

import copy
import inspect
import json
import time
from pathlib import Path
from typing import Any, Callable

import yaml

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt  # noqa: E402

from .builders.migrate import fusion_name, migrate  # noqa: E402
from .config import Config  # noqa: E402
from .errors import ConfigError  # noqa: E402
from .fusion import FUSIONS  # noqa: E402
from .report import read_metrics  # noqa: E402
from .runfolder import CONFIG, MODEL_DIR  # noqa: E402


def variant_config(config: Config, fusion: str) -> Config:
    """`config` with `model.fusion` of type `fusion`; the settings of the config's own fusion that this
    one also takes (depth, num_heads, dropout, ...) are kept, the rest are the fusion's defaults."""
    fusion = fusion_name(fusion)
    if fusion not in FUSIONS:
        raise ConfigError(f"--fusion: expected names from {', '.join(FUSIONS)}, got {fusion!r}")
    variant = migrate(config)  # a copy, with model.fusion
    own = variant.model["fusion"]
    accepted = set(inspect.signature(FUSIONS[fusion]).parameters) - {"modalities", "width"}
    variant.model["fusion"] = {"type": fusion, **{k: v for k, v in own.items() if k in accepted}}
    return variant


def modality_variants(config: Config, modality: str, rate: float) -> dict[str, Config]:
    """The three models that say what modality dropout buys when `modality` goes missing:
    `dropout` (trained with `train.modality_dropout.<modality>: rate`), `no_dropout` (the config as it
    is) and `without_<modality>` (its encoder and every input of it removed: trained on the rest alone).
    A task that reads nothing else is left out of all three, so they train the same tasks."""
    from .tasks import TASKS

    if modality not in (config.model.get("encoders") or {}):
        raise ConfigError(f"--drop-modality: expected one of the config's encoders "
                          f"({', '.join(sorted(config.model.get('encoders') or {}))}), got {modality!r}")
    if not 0.0 < rate < 1.0:
        raise ConfigError(f"--dropout: expected a chance between 0 and 1, got {rate}")
    def inputs_of(spec: dict[str, Any]) -> dict[str, str]:  # a task's own inputs, else its type's
        task_type = TASKS.get(spec.get("type"))
        return dict(spec.get("inputs") or (task_type.data_class.inputs if task_type else {}))

    tasks = {}
    for name, spec in config.tasks.items():
        task_type = TASKS.get(spec.get("type"))
        data = task_type.data_class if task_type else None
        inputs = inputs_of(spec)
        if set(inputs) <= {modality}:
            continue  # reads only the removed modality
        required = tuple(inputs) if data is None or data.required is None else data.required
        if modality in required:
            raise ConfigError(f"tasks.{name}: a {spec.get('type')} task cannot do without {modality!r}")
        tasks[name] = spec
    if not tasks:
        raise ConfigError(f"--drop-modality {modality}: every task of the config reads {modality!r} alone")
    variants = {}
    for name in ("dropout", "no_dropout", f"without_{modality}"):
        variant = copy.deepcopy(config)
        variant.tasks = copy.deepcopy(tasks)
        if name == "dropout":
            variant.train.modality_dropout = {**variant.train.modality_dropout, modality: rate}
        if name.startswith("without"):
            variant.model["encoders"].pop(modality)
            variant.train.modality_dropout = {m: p for m, p in variant.train.modality_dropout.items() if m != modality}
            for spec in variant.tasks.values():
                spec["inputs"] = {m: f for m, f in inputs_of(spec).items() if m != modality}
        variants[name] = variant
    return variants


def run_ablation(config: Config, fusions: list[str], out: Path, *, log: Callable[[str], None] = print
                 ) -> dict[str, dict[str, Any]]:
    """Train and evaluate every fusion variant; write `out/ablation.json` and `out/ablation.md`."""
    variants = {name: variant_config(config, name) for name in fusions}  # every name checked before training
    summary = run_variants(config, variants, out, log=log)
    write_ablation_report(summary, out, config.data.test or config.data.val)
    return summary


def run_modality_ablation(config: Config, modality: str, out: Path, *, rate: float = 0.5,
                          log: Callable[[str], None] = print) -> dict[str, dict[str, Any]]:
    """Train the three `modality_variants`, evaluate each with every modality and with `modality`
    removed; write `out/ablation.json` and `out/ablation.md`."""
    variants = modality_variants(config, modality, rate)
    drops = {name: [(), (modality,)] if not name.startswith("without") else [()] for name in variants}
    summary = run_variants(config, variants, out, drops=drops, log=log)
    write_modality_report(summary, out, config.data.test or config.data.val, modality, rate)
    return summary


def run_variants(config: Config, variants: dict[str, Config], out: Path, *,
                 drops: dict[str, list[tuple[str, ...]]] | None = None,
                 log: Callable[[str], None] = print) -> dict[str, dict[str, Any]]:
    """Train each variant in `out/<name>` one after another and evaluate it on `data.test` (else
    `data.val`), also with each modality set of `drops[name]` removed (`results_without_<m>`).
    Variants already trained and evaluated with the same config in `out` are kept; a stopped one resumes."""
    from .api import load
    from .data.manifest import read_records
    from .training.trainer import Trainer

    split = config.data.test or config.data.val
    if split is None:
        raise ConfigError("data.test: the ablation evaluates every variant on a held-out manifest (or data.val)")
    records = read_records(split, on_error=config.data.on_error, log=log)
    out.mkdir(parents=True, exist_ok=True)
    previous = json.loads((out / "ablation.json").read_text()) if (out / "ablation.json").exists() else {}
    summary: dict[str, dict[str, Any]] = {}
    for number, (name, variant) in enumerate(variants.items(), start=1):
        same = same_config(out / name, variant)
        if same and name in previous and (out / name / MODEL_DIR).is_dir():
            log(f"ablation: {name} ({number} of {len(variants)}) kept: {out / name} was trained and evaluated "
                f"with this config")
            summary[name] = previous[name]
            continue
        log(f"ablation: {name} ({number} of {len(variants)})")
        started = time.perf_counter()
        trainer = Trainer(variant, out / name, resume=same, log=log)
        trainer.fit()
        wall = time.perf_counter() - started
        rates = [r["samples_per_s"] for r in read_metrics(out / name) if "samples_per_s" in r]
        model = load(out / name, device=config.train.device)
        summary[name] = {"params": sum(p.numel() for p in trainer.model.parameters()),
                         "samples_per_s": rates[-1] if rates else None, "wall_s": round(wall, 1)}
        for drop in (drops or {}).get(name, [()]):
            key = "results" if not drop else "results_without_" + "_".join(drop)
            summary[name][key] = model.evaluate(records, batch_size=config.train.eval_batch_size, drop=drop)
        (out / "ablation.json").write_text(json.dumps(summary, indent=1))  # a killed ablation keeps what it did
    return summary


def same_config(folder: Path, config: Config) -> bool:
    """Whether `folder` is a run started from exactly `config` (its resolved `config.yaml`)."""
    saved = folder / CONFIG
    if not saved.exists():
        return False
    return yaml.safe_load(saved.read_text()) == yaml.safe_load(yaml.safe_dump(config.to_dict(), sort_keys=False))


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


def write_modality_report(summary: dict[str, dict[str, Any]], out: Path, split: str | Path, modality: str,
                          rate: float) -> Path:
    """`out/ablation.md`: every score of each variant with all modalities and with `modality` removed."""
    key = f"results_without_{modality}"
    columns = sorted({c for v in summary.values() for r in (v["results"], v.get(key, {})) for c in scores(r)})
    lines = [f"# What the model loses without {modality}", "",
             f"`dropout`: trained with {modality} removed from a random {rate:.0%} of the training examples; "
             f"`no_dropout`: trained with every modality; `without_{modality}`: trained without it. "
             f"Scores on `{split}`.", "",
             "| model | evaluated | parameters | " + " | ".join(columns) + " |", "|---" * (3 + len(columns)) + "|"]
    for name, v in summary.items():
        for label, results in (("every modality", v["results"]), (f"{modality} removed", v.get(key))):
            if results is None:
                continue
            if name.startswith("without"):
                label = f"without {modality} (trained so)"
            s = scores(results)
            cells = [f"{s[c]:.3f}" if c in s else "—" for c in columns]
            lines.append(f"| {name} | {label} | {v['params']:,} | " + " | ".join(cells) + " |")
    (out / "ablation.md").write_text("\n".join(lines) + "\n")
    return out / "ablation.md"
