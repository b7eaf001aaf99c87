"""`polymodal demo`: the built-in benchmarks end to end — synthesise, pre-train, fine-tune, evaluate, report.

Images: a CLIP-style dual encoder pre-trained contrastively on image–caption pairs, then a joint
transformer fine-tuned from its encoders for VQA on all the labels and on 10% of them (beside the same
model trained from scratch on that 10%: what pre-training buys), and captioning from its image encoder.
Clips: one joint model over video, audio and text trained on several tasks at once. Drawing: an image
tokenizer, then a language model that writes its codes from a prompt (text to image), on short schedules."""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.table import Table

from .api import LoadedModel, load
from .config import load_config
from .data.manifest import read_manifest
from .data.shapes import synthesize
from .data.shapes_generation import synthesize_generation
from .data.shapes_av import synthesize_av
from .drawings import plot_generated
from .report import write_report
from .training.trainer import train

# (run name, shipped config, data set, what the run demonstrates, extra overrides; {pretrain} is the
# pre-trained run's folder). Shorter schedules than some shipped configs', to fit 15 minutes on a 2-core CPU
# with the install (see docs/results.md for what each costs): the contrastive pre-training as shipped
# (shapes-clip.yaml, 600 steps), VQA on all labels VQA_STEPS of shapes-vqa.yaml's 2 600 steps, the two
# 10%-label runs FRACTION_STEPS of 1 000, captioning 400 steps of 32 from the pre-trained image encoder, the
# clips model 300 steps over 8 of the clips' 16 frames (the shipped recipe: 3 000 steps, every frame).
# Contrastive pre-training is the one that helps VQA most per step: the 4-objective pretrain.yaml at 400
# steps (2.5× the cost of these 600) led to VQA 0.886 and spatial 0.679 after 2 400 steps (val).
VQA_STEPS, FRACTION_STEPS = 1600, 300
# Text to image on short schedules (the shipped recipes: 3 000 steps each, docs/results.md#drawing-images):
# enough to see the two stages work and the drawings take shape, not to draw well.
TOKENIZER_STEPS, DRAW_STEPS = 300, 300
# The VQA fine-tuning's new layers (fusion, readout, head) at 3× shapes-vqa.yaml's learning rate, the
# pre-trained encoders at its own (lr_mult 0.33): spatial questions are learnt by step ~1 200 instead of
# after 1 600 (seed 0, test: 1.000 against 0.542 at 1 600 steps with one rate of 1e-3; one rate of 2e-3
# disturbs the encoders: 0.854 overall). docs/results.md#the-demo has the runs.
FINE_TUNE = ["train.lr=3.0e-3", "train.lr_mult={backbone.encoders: 0.33}"]
RECIPES = [
    ("pretrain", "shapes-clip.yaml", "image",
     "CLIP-style dual encoder pre-trained contrastively on image-caption pairs",
     []),
    ("vqa", "shapes-vqa.yaml", "image",
     "VQA on all the labels: a joint transformer (early fusion) fine-tuned from the pre-trained encoders",
     ["train.init_from={pretrain}", f"train.max_steps={VQA_STEPS}", *FINE_TUNE]),
    ("vqa_10pct", "finetune-vqa.yaml", "image", "VQA on 10% of the labels, from the pre-trained encoders",
     ["train.init_from={pretrain}", f"train.max_steps={FRACTION_STEPS}", f"train.val_every={FRACTION_STEPS // 3}"]),
    ("vqa_10pct_scratch", "finetune-vqa.yaml", "image", "VQA on 10% of the labels, from scratch (the baseline)",
     ["train.init_from=null", f"train.max_steps={FRACTION_STEPS}", f"train.val_every={FRACTION_STEPS // 3}"]),
    ("caption", "caption-image.yaml", "image",
     "encoder-decoder captioning, its image encoder from the pre-trained run (a short schedule)",
     ["train.init_from={pretrain}", "train.max_steps=400", "train.batch_size=32", "train.val_every=0"]),
    ("av", "shapes-av.yaml", "av",
     "joint transformer over video, audio and text: video QA and sound classification (a short schedule)",
     ["train.max_steps=300", "train.val_every=0", "model.encoders.video.num_frames=8"]),
    ("tokenizer", "tokenizer-image.yaml", "generation",
     "image tokenizer: a convolutional autoencoder with FSQ codes (a short schedule)",
     [f"train.max_steps={TOKENIZER_STEPS}", "train.val_every=0"]),
    ("draw", "text-to-image.yaml", "generation",
     "text to image: a decoder-only language model writes the tokenizer's codes (a short schedule)",
     ["model.encoders.image.path={tokenizer}", f"train.max_steps={DRAW_STEPS}", "train.val_every=0"]),
]
COMPARED = ("vqa_10pct", "vqa_10pct_scratch")  # what pre-training buys: a section of their own in the report
SIZES = {"image": {"n_train": 20000, "n_val": 500, "n_test": 500},
         "av": {"n_train": 1000, "n_val": 100, "n_test": 200},
         "generation": {"n_train": 6000, "n_val": 70, "n_test": 140, "n_heldout": 70}}
QUICK = {"image": {"n_train": 600, "n_val": 100, "n_test": 100, "max_steps": 40},
         "av": {"n_train": 64, "n_val": 16, "n_test": 32, "max_steps": 12},
         "generation": {"n_train": 140, "n_val": 14, "n_test": 14, "n_heldout": 14, "max_steps": 12}}
FOLDERS = {"image": "", "av": "av", "generation": "generation"}  # each data set's folder under the data folder


def shipped_config(name: str) -> Path:
    """A config shipped inside the package (`configs/` in a checkout is the same folder)."""
    return Path(str(resources.files("polymodal") / "configs" / name))


def _in_turn(records: list[dict[str, Any]], group: Callable[[dict[str, Any]], Any], n: int) -> list[dict[str, Any]]:
    """Up to `n` records taking each group (question type, number of objects) in turn: the first of every
    group, then the second of every group, ..."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(group(r), []).append(r)
    return [rs[i] for i in range(n) for rs in groups.values() if i < len(rs)][:n]


def _vqa_examples(model: LoadedModel, records: list[dict[str, Any]], n: int = 12) -> list[dict[str, Any]]:
    chosen = _in_turn(records, lambda r: r.get("question_type", "?"), n)
    answers = model.predict(next(iter(model.system.vocab)), chosen) if chosen else []
    return [{"image": r["image"], "question": r["question"], "answer": r["answer"], "prediction": p}
            for r, p in zip(chosen, answers)]


def _explanations(model: LoadedModel, records: list[dict[str, Any]], folder: Path, n: int = 3) -> list[Path]:
    """Pictures of where the VQA model attended, for the first record of `n` question types."""
    folder.mkdir(parents=True, exist_ok=True)
    chosen: dict[str, dict[str, Any]] = {}
    for r in records:
        chosen.setdefault(r.get("question_type", "?"), r)
    paths = []
    for i, r in enumerate(list(chosen.values())[:n]):
        paths.append(model.explain(folder / f"explain_{i}.png", r["question"], image=r["image"]))
    return paths


def _caption_examples(model: LoadedModel, records: list[dict[str, Any]], n: int = 8) -> list[dict[str, Any]]:
    """Generated captions for `n` test images with 1, 2 and 3 objects in turn."""
    chosen = _in_turn(records, lambda r: r["text"].count(" a ") + 1, n)
    captions = model.caption([r["image"] for r in chosen]) if chosen else []
    return [{"image": r["image"], "caption": r["text"], "prediction": c} for r, c in zip(chosen, captions)]


def _av_examples(model: LoadedModel, records: list[dict[str, Any]], n: int = 6) -> list[dict[str, Any]]:
    chosen = _in_turn(records, lambda r: r.get("question_type", "?"), n)
    answers = model.predict("video_qa", chosen) if chosen else []
    return [{"video": r["video"], "audio": r["audio"], "question": r["question"], "answer": r["answer"],
             "prediction": p} for r, p in zip(chosen, answers)]


def _synthesize(data: Path, kind: str, sizes: dict[str, int]) -> dict[str, Any]:
    """The benchmark's statistics, synthesising it first unless it is there at this size."""
    folder = data / FOLDERS[kind]
    stats_path = folder / "stats.json"

    def train_count(stats: dict[str, Any]) -> int:
        return stats["train"]["count"] if kind == "generation" else stats["counts"]["train"]

    if not stats_path.exists() or train_count(json.loads(stats_path.read_text())) != sizes["n_train"]:
        what = {"image": "", "av": "audio-visual ", "generation": "prompted (text to image) "}[kind]
        Console().rule(f"[bold]synthesise the {what}shapes benchmark")
        if kind == "generation":
            synthesize_generation(folder, **sizes)
        else:
            (synthesize_av if kind == "av" else synthesize)(data, **sizes)
    stats = json.loads(stats_path.read_text())
    if kind == "generation":
        stats["counts"] = {split: stats[split]["count"] for split in ("train", "val", "test")}
    return {"folder": folder, **stats}


def _baselines(stats: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Task → metric → the majority baseline beside it in the results table."""
    image, av = stats["image"]["baselines"], stats["av"]["baselines"]
    return {
        "vqa": {"accuracy": image["overall"], **{f"accuracy/{t}": v for t, v in image.items() if t != "overall"}},
        "video_qa": {"accuracy": av["overall"], **{f"accuracy/{t}": v for t, v in av.items() if t != "overall"}},
        "sound": {"accuracy": stats["av"]["label_baseline"]["accuracy"]},
    }


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


def _two_stage(runs: dict[str, Path], results: dict[str, Any], n_train: int) -> dict[str, Any]:
    """The 10%-label runs side by side, for the report."""
    labels = {"vqa_10pct": "from the pre-trained encoders", "vqa_10pct_scratch": "from scratch"}
    return {"runs": {labels[r]: runs[r] for r in labels}, "task": "vqa", "metric": "accuracy",
            "results": {labels[r]: results[r]["vqa"]["accuracy"] for r in labels},
            "what": f"The same joint transformer and schedule on 10% of the {n_train} labelled training images "
                    f"(data.train_fraction: 0.1), once starting from the encoders of the pre-trained dual encoder "
                    f"(trained on the captions alone) and once from scratch."}


def _with_runs(override: str, runs: dict[str, Path]) -> str:
    """`override` with each `{run}` (an earlier run's name) replaced by that run's folder."""
    for name, folder in runs.items():
        override = override.replace("{" + name + "}", str(folder))
    return override


def run_demo(out: Path, *, quick: bool = False, seed: int = 0) -> Path:
    """Run the demo into `out` with every run's `train.seed` at `seed` (the data stay the same); returns
    the report path."""
    console = Console()
    started = time.perf_counter()
    data = out / "data"
    sizes = {kind: {k: v for k, v in (QUICK if quick else SIZES)[kind].items() if k != "max_steps"}
             for kind in SIZES}
    stats = {kind: _synthesize(data, kind, sizes[kind]) for kind in SIZES}
    tests = {kind: read_manifest(stats[kind]["folder"] / "test.jsonl") for kind in SIZES}

    runs, models, results, timings, removed = {}, {}, {}, {}, {}
    for name, config_name, kind, what, overrides in RECIPES:
        console.rule(f"[bold]train {name}: {what}")
        folder = stats[kind]["folder"]
        sets = [f"data.train={folder / 'train.jsonl'}", f"data.val={folder / 'val.jsonl'}",
                f"data.test={folder / 'test.jsonl'}", f"train.seed={seed}",
                *(_with_runs(o, runs) for o in overrides)]
        if quick:
            sets += [f"train.max_steps={QUICK[kind]['max_steps']}", "train.warmup_steps=5", "train.ckpt_every=1000",
                     "train.log_every=4", f"train.val_every={QUICK[kind]['max_steps'] // 2}"]
            if config_name == "finetune-vqa.yaml":  # 10% of the quick benchmark is some 60 images
                sets.append("train.batch_size=16")
        config = load_config(shipped_config(config_name), sets)
        t0 = time.perf_counter()
        runs[name] = out / name
        train(config, runs[name])
        timings[name] = time.perf_counter() - t0
        models[name] = model = load(runs[name])
        results[name] = model.evaluate(tests[kind])
        if len(model.system.model.backbone.encoders) > 1 and name not in COMPARED:  # each modality removed in turn
            tasks = model.system.model.tasks
            without = {m: model.evaluate(tests[kind], drop=(m,),
                                         tasks=tuple(t for t, task in tasks.items() if m in task.data.inputs))
                       for m in model.system.model.backbone.encoders}
            removed[name] = {m: r for m, r in without.items() if r}

    baselines = _baselines(stats)
    table = Table(title="Polymodal demo — test split")
    for column in ("run", "task", "metric", "value", "majority baseline"):
        table.add_column(column)
    for run, tasks in results.items():
        if run in COMPARED:
            continue
        for task, metrics in tasks.items():
            for metric, value in metrics.items():
                if metric != "n":
                    base = baselines.get(task, {}).get(metric)
                    table.add_row(run, task, metric, f"{value:.3f}", "" if base is None else f"{base:.3f}")
    console.print(table)
    console.print("VQA on 10% of the labels (test accuracy): " + ", ".join(
        f"{run} {results[run]['vqa']['accuracy']:.3f}" for run in COMPARED))

    total = time.perf_counter() - started
    counts = {kind: " / ".join(f"{stats[kind]['counts'][k]} {k}" for k in ("train", "val", "test")) for kind in SIZES}
    notes = [f"Total time {total:.0f} s on this machine ("
             + ", ".join(f"{k} training {v:.0f} s" for k, v in timings.items()) + ").",
             f"Seed {seed} (train.seed of every run). Data: the built-in shapes benchmark, {counts['image']} images; its audio-visual part, "
             f"{counts['av']} clips; its prompted part (text to image), {counts['generation']} prompts with images."]
    explanations = _explanations(models["vqa"], tests["image"], out / "report")
    (out / "report").mkdir(parents=True, exist_ok=True)
    plot_generated(models["draw"], tests["generation"], out / "report" / "drawings.png")
    report = write_report(out / "report", runs=runs, results=results, baselines=baselines, removed=removed,
                          explanations=explanations,
                          vqa_examples=_vqa_examples(models["vqa"], tests["image"]),
                          retrieval_examples=_retrieval_examples(models["pretrain"], tests["image"]),
                          av_examples=_av_examples(models["av"], tests["av"]), notes=notes,
                          caption_examples=_caption_examples(models["caption"], tests["image"]),
                          two_stage=_two_stage(runs, results, stats["image"]["counts"]["train"]),
                          drawings=out / "report" / "drawings.png")
    console.print(f"report: {report}   (total {total:.0f} s)")
    return report
