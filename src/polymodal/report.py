"""Run reports: loss curves, results beside baselines, and example predictions shown with their images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from .runfolder import METRICS  # noqa: E402


def read_metrics(run: Path) -> list[dict[str, Any]]:
    path = run / METRICS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_losses(runs: dict[str, Path], path: Path) -> None:
    """Training loss against step, one panel per run."""
    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.5), squeeze=False)
    for ax, (name, run) in zip(axes[0], runs.items()):
        rows = [r for r in read_metrics(run) if "loss" in r]
        ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=1.2)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def task_curves(rows: list[dict[str, Any]]) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
    """{"loss": {task: (steps, values)}, "weight": {...}} from the logged `loss/<task>` and `weight/<task>`
    (a task drawn at only some steps has points at those steps)."""
    curves: dict[str, dict[str, tuple[list[int], list[float]]]] = {"loss": {}, "weight": {}}
    for row in rows:
        for key, value in row.items():
            kind, _, task = key.partition("/")
            if kind in curves and task:
                steps, values = curves[kind].setdefault(task, ([], []))
                steps.append(row["step"])
                values.append(value)
    return curves


def plot_task_curves(run: Path, path: Path) -> bool:
    """Each task's training loss and loss weight against step, for a run of several tasks; False (and no
    file) for a run of one task."""
    curves = task_curves(read_metrics(run))
    if len(curves["loss"]) < 2:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, (kind, label) in zip(axes, (("loss", "training loss"), ("weight", "loss weight"))):
        for task, (steps, values) in curves[kind].items():
            ax.plot(steps, values, lw=1.2, label=task)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def validation_curve(run: Path, task: str, metric: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one validation metric over a run (its `val` rows in metrics.jsonl)."""
    steps, values = [], []
    for row in read_metrics(run):
        value = (row.get("val") or {}).get(task, {}).get(metric)
        if value is not None:
            steps.append(row["step"])
            values.append(value)
    return steps, values


def plot_two_stage(runs: dict[str, Path], task: str, metric: str, path: Path) -> None:
    """A validation metric against step for runs that differ in how they started (pre-trained or not)."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, run in runs.items():
        steps, values = validation_curve(run, task, metric)
        ax.plot(steps, values, marker="o", lw=1.2, label=name)
    ax.set_xlabel("fine-tuning step")
    ax.set_ylabel(f"validation {task} {metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _image_grid(examples: list[dict[str, Any]], path: Path, titles: list[str], right: list[bool], *,
                cell: tuple[float, float], fontsize: int) -> None:
    """Each example's image, four to a row, under its title: green where `right`, red elsewhere."""
    cols = 4
    rows = (len(examples) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cell[0] * cols, cell[1] * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, ex, title, ok in zip(axes.flat, examples, titles, right):
        ax.imshow(Image.open(ex["image"]).convert("RGB"))
        ax.set_title(title, fontsize=fontsize, color="green" if ok else "red")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_vqa_examples(examples: list[dict[str, Any]], path: Path) -> None:
    """Images with their question, the predicted answer and the true one (green right, red wrong)."""
    titles = [f"{ex['question']}\npred: {ex['prediction']}  (true: {ex['answer']})" for ex in examples]
    _image_grid(examples, path, titles, [ex["prediction"] == ex["answer"] for ex in examples],
                cell=(3.2, 3.6), fontsize=8)


def plot_caption_examples(examples: list[dict[str, Any]], path: Path) -> None:
    """Images with their generated caption and the true one (green when they are equal)."""
    titles = [f"{_wrap(ex['prediction'])}\n(true: {_wrap(ex['caption'])})" for ex in examples]
    _image_grid(examples, path, titles, [ex["prediction"] == ex["caption"] for ex in examples],
                cell=(3.4, 3.8), fontsize=7)


def _wrap(text: str, width: int = 38) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or "(nothing)"


def plot_av_examples(examples: list[dict[str, Any]], path: Path, frames: int = 4) -> None:
    """Clips as a strip of frames above their sound wave, with the question, predicted and true answer."""
    from .data.media import read_audio, read_video

    fig, axes = plt.subplots(2 * len(examples), frames, figsize=(1.6 * frames, 2.3 * len(examples)),
                             squeeze=False, gridspec_kw={"height_ratios": [3, 1] * len(examples)})
    for ax in axes.flat:
        ax.axis("off")
    for row, ex in enumerate(examples):
        pictures = read_video(ex["video"], num_frames=frames)
        for col, picture in enumerate(pictures):
            axes[2 * row, col].imshow(picture, interpolation="nearest")
        wave = read_audio(ex["audio"])[0]
        sound = fig.add_subplot(axes[2 * row + 1, 0].get_gridspec()[2 * row + 1, :])
        sound.plot(wave, lw=0.4, color="black")
        sound.axis("off")
        ok = ex["prediction"] == ex["answer"]
        axes[2 * row, 0].set_title(f"{ex['question']}  pred: {ex['prediction']}  (true: {ex['answer']})",
                                   fontsize=8, loc="left", color="green" if ok else "red")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_retrieval_examples(examples: list[dict[str, Any]], path: Path) -> None:
    """For each caption, the top retrieved images (green when their caption matches)."""
    k = max(len(ex["retrieved"]) for ex in examples)
    fig, axes = plt.subplots(len(examples), k, figsize=(2.4 * k, 2.7 * len(examples)), squeeze=False)
    for row, ex in zip(axes, examples):
        for ax in row:
            ax.axis("off")
        row[0].set_title(ex["query"], fontsize=8, loc="left")
        for ax, hit in zip(row, ex["retrieved"]):
            ax.imshow(Image.open(hit["image"]).convert("RGB"))
            ax.text(0.02, 0.02, f"{hit['score']:.2f}", transform=ax.transAxes, fontsize=7,
                    color="green" if hit["match"] else "red", backgroundcolor="white")
        row[0].set_title(f"“{ex['query']}”", fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _verdict_grid(labels: list[str], cells: list[list[tuple[Any, bool]]], path: Path, *,
                  size: tuple[float, float]) -> None:
    """A row per label (written on the left), then its cells: each (a function that draws on its axes,
    whether it passed), framed green when it did and red when not; `size`: a cell's width and height."""
    k = max(len(row) for row in cells)
    fig, axes = plt.subplots(len(labels), k + 1, figsize=(size[0] * (k + 1.6), size[1] * len(labels)),
                             squeeze=False, gridspec_kw={"width_ratios": [2.6] + [1] * k})
    for row, label, row_cells in zip(axes, labels, cells):
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].axis("off")
        row[0].text(0.0, 0.5, label, fontsize=8, va="center")
        for ax, (draw, ok) in zip(row[1:], row_cells):
            draw(ax)
            for side in ax.spines.values():
                side.set_color("green" if ok else "red")
                side.set_linewidth(2.5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_drawings(examples: list[dict[str, Any]], path: Path) -> None:
    """Text to image (or video, each clip's frames side by side): a row per prompt (one per GenEval
    category, say), its category and prompt on the left, then its drawings, each framed green when the
    judge passes it and red when not.
    Each example: {"prompt", "category", "images": [PIL or (S, W, 3) array, ...], "passed": [bool, ...]}."""
    def show(image: Any) -> Any:
        return lambda ax: ax.imshow(np.asarray(image), interpolation="nearest")

    _verdict_grid([f"{ex['category']}\n“{_wrap(ex['prompt'], 24)}”" for ex in examples],
                  [[(show(image), ok) for image, ok in zip(ex["images"], ex["passed"])] for ex in examples],
                  path, size=(1.6, 1.7))


def plot_sounds(examples: list[dict[str, Any]], path: Path) -> None:
    """Text to sound: a row per prompt, the prompt on the left, then the log-mel spectrogram of each sound
    made for it (time across, pitch up), framed green when the sound judge hears what was asked and red when
    not, with what it heard. Each example: {"prompt", "mels": [(M, T) array, ...], "heard": [str, ...],
    "passed": [bool, ...]}."""
    def show(mel: Any, heard: str, ok: bool) -> Any:
        def draw(ax: Any) -> None:
            ax.imshow(np.asarray(mel), origin="lower", aspect="auto", cmap="magma")
            ax.set_title(heard, fontsize=6, color="green" if ok else "red")
        return draw

    _verdict_grid([f"“{_wrap(ex['prompt'], 24)}”" for ex in examples],
                  [[(show(m, h, ok), ok) for m, h, ok in zip(ex["mels"], ex["heard"], ex["passed"])]
                   for ex in examples], path, size=(1.9, 1.8))


def results_table(results: dict[str, dict[str, dict[str, float]]],
                  baselines: dict[str, dict[str, float]] | None = None) -> list[str]:
    """Markdown rows: run | task | metric | value | majority baseline (where one applies)."""
    lines = ["| run | task | metric | value | majority baseline |", "|---|---|---|---|---|"]
    for run, tasks in results.items():
        for task, metrics in tasks.items():
            for metric, value in metrics.items():
                if metric == "n":
                    continue
                base = (baselines or {}).get(task, {}).get(metric)
                shown = f"{base:.3f}" if base is not None else ""
                lines.append(f"| {run} | {task} | {metric} | {value:.3f} | {shown} |")
    return lines


def removed_table(results: dict[str, dict[str, dict[str, float]]],
                  removed: dict[str, dict[str, dict[str, dict[str, float]]]]) -> list[str]:
    """Markdown rows: run | modality removed | task | metric | value | with every modality, for each
    accuracy and R@1 a task still gives without that modality (a task that needs it is left out)."""
    lines = ["| run | removed | task | metric | value | with every modality |", "|---|---|---|---|---|---|"]
    for run, by_modality in removed.items():
        for modality, tasks in by_modality.items():
            for task, metrics in tasks.items():
                for metric, value in metrics.items():
                    if metric == "accuracy" or metric.endswith("R@1"):
                        full = results.get(run, {}).get(task, {}).get(metric)
                        shown = f"{full:.3f}" if full is not None else ""
                        lines.append(f"| {run} | {modality} | {task} | {metric} | {value:.3f} | {shown} |")
    return lines


def write_report(out: Path, *, runs: dict[str, Path], results: dict[str, dict[str, dict[str, float]]],
                 baselines: dict[str, dict[str, float]], vqa_examples: list[dict[str, Any]],
                 retrieval_examples: list[dict[str, Any]], notes: list[str],
                 av_examples: list[dict[str, Any]] | None = None,
                 removed: dict[str, dict[str, dict[str, dict[str, float]]]] | None = None,
                 explanations: list[Path] | None = None,
                 caption_examples: list[dict[str, Any]] | None = None,
                 two_stage: dict[str, Any] | None = None, drawings: Path | None = None) -> Path:
    """Write `out/report.md` with its plots beside it; returns the report path.

    `removed`: {run: {modality: {task: {metric: value}}}}, each run evaluated with one modality removed;
    `explanations`: pictures (in `out`) of where a model attended for its answer; `caption_examples`:
    images with their generated and true captions; `two_stage`: {"runs": {label: run}, "task", "metric",
    "results": {label: value}, "what": a sentence}, fine-tuning from a pre-trained model beside training
    from scratch; `drawings`: a picture (in `out`) of a text-to-image model's drawings per category."""
    out.mkdir(parents=True, exist_ok=True)
    plot_losses(runs, out / "loss_curves.png")
    compared = set(two_stage["runs"].values()) if two_stage else set()  # shown in their own section
    lines = ["# Polymodal demo report", "", *notes, "", "## Results (test split)", "",
             *results_table({r: v for r, v in results.items() if runs.get(r) not in compared}, baselines), "",
             "Retrieval counts a hit when the retrieved item's caption equals the query's caption: the synthetic",
             "captions repeat, so every image of an identical scene is a correct answer.", "",
             "## Training loss", "", "![loss curves](loss_curves.png)", ""]
    for name, run in runs.items():
        if plot_task_curves(run, out / f"task_curves_{name}.png"):
            lines += [f"Each task of {name}: loss and weight.", "", f"![{name} tasks](task_curves_{name}.png)", ""]
    if two_stage:
        plot_two_stage(two_stage["runs"], two_stage["task"], two_stage["metric"], out / "two_stage.png")
        lines += ["## Pre-training, then fine-tuning on a fraction of the labels", "", two_stage["what"], "",
                  f"| start | test {two_stage['task']} {two_stage['metric']} |", "|---|---|",
                  *[f"| {label} | {value:.3f} |" for label, value in two_stage["results"].items()], "",
                  "![validation during fine-tuning](two_stage.png)", ""]
    if removed:
        lines += ["## Each modality removed in turn (test split)", "",
                  "Every record loses that modality; the model answers with its learned placeholder in its place.",
                  "", *removed_table(results, removed), ""]
    if vqa_examples:
        plot_vqa_examples(vqa_examples, out / "vqa_examples.png")
        lines += ["## Example answers", "", "![VQA examples](vqa_examples.png)", ""]
    if explanations:
        lines += ["## Where the answer attended", "",
                  "Attention rollout from the joint transformer's CLS over the image patches and the words.", "",
                  *[f"![explanation]({p.name})" for p in explanations], ""]
    if caption_examples:
        plot_caption_examples(caption_examples, out / "caption_examples.png")
        lines += ["## Generated captions", "", "Greedy decoding; green where the caption equals the true one.", "",
                  "![caption examples](caption_examples.png)", ""]
    if retrieval_examples:
        plot_retrieval_examples(retrieval_examples, out / "retrieval_examples.png")
        lines += ["## Example retrievals (text → image)", "", "![retrieval examples](retrieval_examples.png)", ""]
    if av_examples:
        plot_av_examples(av_examples, out / "av_examples.png")
        lines += ["## Example answers about clips (frames over time, then the sound)", "",
                  "![video QA examples](av_examples.png)", ""]
    if drawings:
        lines += ["## Drawings from prompts (text to image)", "",
                  "The first test prompt of each category, four drawings each with guidance, framed green where the",
                  "shapes detector finds what the prompt asks (GenEval's rules), red where it does not.", "",
                  f"![drawings]({drawings.name})", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    (out / "results.json").write_text(json.dumps(results, indent=1))
    if removed:
        (out / "removed.json").write_text(json.dumps(removed, indent=1))
    return path
