"""The built-in synthetic benchmark "shapes".

Each image shows 1-3 coloured shapes on a light background. Every record carries a caption (`text`),
one question with its answer (`question`, `answer`, `question_type`) and a class `label`, so one data set
exercises retrieval, captioning, VQA and classification. Scenes are random but every caption, question
and answer is derived from the scene, so a model can in principle score 100%; `stats.json` records the
majority-answer baselines a model has to beat.

Everything is drawn from `numpy.random.default_rng((seed, split_index))`: the same seed gives
byte-identical files, and the three splits use independent streams.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from polymodal.data.manifest import write_manifest
from polymodal.errors import ConfigError

SHAPES = ("circle", "square", "triangle")
# Saturated and far apart in RGB, so each is recognisable after anti-aliasing and on any tint.
COLORS = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "yellow": (240, 200, 20),
    "purple": (140, 40, 180),
}
# Bounding-box width as a fraction of the image width: 14 px and 24 px at 64 px.
SIZES = {"small": 14 / 64, "large": 24 / 64}
QUESTION_TYPES = ("attribute", "count", "existence", "spatial")
SPLITS = ("train", "val", "test")
NUMBER_WORDS = ("zero", "one", "two", "three")

_SUPERSAMPLE = 4  # draw at 4x and average 4x4 blocks: anti-aliased edges
_MIN_DX = 0.2  # x-centres differ by at least this fraction of the width, so left/right is clear at a glance
_GAP = 2 / 64  # free space between objects and from the border, as a fraction of the width


@dataclass(frozen=True)
class ShapeObject:
    """One object in a scene; positions and sizes are fractions of the image width.

    Attributes:
        shape: one of SHAPES.
        color: one of COLORS.
        size: one of SIZES.
        x: centre, 0 (left edge) to 1 (right edge).
        y: centre, 0 (top) to 1 (bottom).
    """

    shape: str
    color: str
    size: str
    x: float
    y: float

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"


def synthesize(
    out_dir: str | Path,
    *,
    n_train: int = 20000,
    n_val: int = 500,
    n_test: int = 500,
    seed: int = 0,
    image_size: int = 64,
    log: Callable[[str], Any] = print,
) -> dict:
    """Write the shapes benchmark: `{train,val,test}.jsonl`, `images/{split}/*.png` and `stats.json`.

    Args:
        out_dir: folder to write into (created if needed; existing files of the same names are replaced).
        n_train, n_val, n_test: number of records per split.
        seed: the same seed gives byte-identical files.
        image_size: width and height of the images in pixels.
        log: receives progress lines and, at the end, the table of baselines.

    Returns:
        The statistics written to `stats.json`: per-split `counts`, `question_types`,
        `distinct_captions` and `labels`, and the test-split `baselines` (question type or "overall" ->
        majority-answer accuracy), `majority_answers`, `single_answer_baseline` and `label_baseline`.
    """
    counts = {"train": n_train, "val": n_val, "test": n_test}
    for split, n in counts.items():
        if not isinstance(n, int) or n < (1 if split == "train" else 0):
            least = 1 if split == "train" else 0
            raise ConfigError(f"n_{split}: expected a whole number of at least {least}, got {n!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed: expected a whole number of at least 0, got {seed!r}")
    if image_size < 32:
        raise ConfigError(f"image_size: expected at least 32 pixels, got {image_size}")
    out = Path(out_dir)
    records_by_split: dict[str, list[dict]] = {}
    for split_index, split in enumerate(SPLITS):
        rng = np.random.default_rng((seed, split_index))
        image_dir = out / "images" / split
        image_dir.mkdir(parents=True, exist_ok=True)
        records = []
        for index in range(counts[split]):
            scene = make_scene(rng)
            background = tuple(int(v) for v in 235 + rng.integers(-12, 13, size=3))
            image_path = f"images/{split}/{index:06d}.png"
            render(scene, image_size, background).save(out / image_path, format="PNG")
            question, answer, question_type = make_question(scene, rng)
            records.append(
                {
                    "id": f"{split}-{index:06d}",
                    "image": image_path,
                    "text": caption(scene),
                    "question": question,
                    "answer": answer,
                    "question_type": question_type,
                    "label": leftmost(scene).shape,
                }
            )
            if (index + 1) % 2000 == 0 and index + 1 < counts[split]:
                log(f"shapes: {split} {index + 1}/{counts[split]} images")
        write_manifest(out / f"{split}.jsonl", records)
        log(f"shapes: wrote {len(records)} {split} records to {out / f'{split}.jsonl'}")
        records_by_split[split] = records

    stats = _statistics(records_by_split, seed=seed, image_size=image_size)
    (out / "stats.json").write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    log(format_baselines(stats))
    return stats


def make_scene(rng: np.random.Generator) -> list[ShapeObject]:
    """Draw 1-3 non-overlapping objects with distinct (colour, shape) pairs.

    Objects keep a gap from each other and from the border, and their x-centres differ by at least 1/8
    of the width. Returns them in drawing order (not sorted).
    """
    n_objects = int(rng.integers(1, 4))
    while True:  # a crowded draw (three large objects) can fail to fit; redraw the whole scene
        pairs = rng.choice(len(COLORS) * len(SHAPES), size=n_objects, replace=False)
        sizes = [("small", "large")[int(i)] for i in rng.integers(0, 2, size=n_objects)]
        placed: list[ShapeObject] = []
        for pair, size in zip(pairs, sizes):
            color = list(COLORS)[int(pair) // len(SHAPES)]
            shape = SHAPES[int(pair) % len(SHAPES)]
            half = SIZES[size] / 2
            for _ in range(50):
                x, y = rng.uniform(half + _GAP, 1 - half - _GAP, size=2)
                if all(_fits(x, y, half, other) for other in placed):
                    placed.append(ShapeObject(shape, color, size, float(x), float(y)))
                    break
            else:
                break
        if len(placed) == n_objects:
            return placed


def _fits(x: float, y: float, half: float, other: ShapeObject) -> bool:
    if abs(x - other.x) < _MIN_DX:
        return False
    reach = half + SIZES[other.size] / 2 + _GAP
    return abs(x - other.x) >= reach or abs(y - other.y) >= reach  # bounding boxes apart


def render(scene: Sequence[ShapeObject], image_size: int, background: tuple[int, int, int]) -> Image.Image:
    """Draw a scene as an RGB image of `image_size` x `image_size` pixels."""
    canvas_size = image_size * _SUPERSAMPLE
    canvas = Image.new("RGB", (canvas_size, canvas_size), background)
    draw = ImageDraw.Draw(canvas)
    for obj in scene:
        cx, cy = obj.x * canvas_size, obj.y * canvas_size
        half = SIZES[obj.size] * canvas_size / 2
        box = (cx - half, cy - half, cx + half, cy + half)
        fill = COLORS[obj.color]
        if obj.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif obj.shape == "square":
            draw.rectangle(box, fill=fill)
        else:  # an upward triangle filling the bounding box
            draw.polygon([(cx, cy - half), (cx + half, cy + half), (cx - half, cy + half)], fill=fill)
    return canvas.reduce(_SUPERSAMPLE)  # box average of 4x4 samples: anti-aliased, no ringing, fast


def left_to_right(scene: Sequence[ShapeObject]) -> list[ShapeObject]:
    return sorted(scene, key=lambda obj: obj.x)


def leftmost(scene: Sequence[ShapeObject]) -> ShapeObject:
    return left_to_right(scene)[0]


def caption(scene: Sequence[ShapeObject]) -> str:
    """The caption: objects named left to right, without sizes.

    "a red circle" / "a red circle to the left of a blue square" /
    "a red circle, a blue square and a green triangle from left to right".
    """
    names = [f"a {obj.name}" for obj in left_to_right(scene)]
    if len(names) == 1:
        return names[0]
    if len(names) == 2:
        return f"{names[0]} to the left of {names[1]}"
    return f"{', '.join(names[:-1])} and {names[-1]} from left to right"


def make_question(scene: Sequence[ShapeObject], rng: np.random.Generator) -> tuple[str, str, str]:
    """One question about the scene; the four types are equally frequent over the whole benchmark.

    Spatial questions need two objects, so scenes that have them ask spatial questions more often
    (3/8 instead of 1/4), which makes up for the one-object scenes (a third of all) that cannot.

    Returns:
        (question, answer, question_type); the answer is one lower-case word.
    """
    if len(scene) >= 2:
        weights = np.array([5 / 24 if kind != "spatial" else 3 / 8 for kind in QUESTION_TYPES])
        kind = QUESTION_TYPES[int(rng.choice(len(QUESTION_TYPES), p=weights / weights.sum()))]
    else:
        types = [kind for kind in QUESTION_TYPES if kind != "spatial"]
        kind = types[int(rng.integers(len(types)))]
    ask = {"attribute": _attribute, "count": _count, "existence": _existence, "spatial": _spatial}[kind]
    question, answer = ask(list(scene), rng)
    return question, answer, kind


def _pick(rng: np.random.Generator, items: Sequence):
    return items[int(rng.integers(len(items)))]


def _attribute(scene: list[ShapeObject], rng: np.random.Generator) -> tuple[str, str]:
    shape_counts = Counter(obj.shape for obj in scene)
    color_counts = Counter(obj.color for obj in scene)
    # Only ask about an object the question identifies unambiguously.
    options = {
        "color": [obj for obj in scene if shape_counts[obj.shape] == 1],
        "shape": [obj for obj in scene if color_counts[obj.color] == 1],
        "size": scene,
    }
    sub_kind = _pick(rng, [name for name, objects in options.items() if objects])
    obj = _pick(rng, options[sub_kind])
    if sub_kind == "color":
        return f"what color is the {obj.shape}?", obj.color
    if sub_kind == "shape":
        return f"what shape is the {obj.color} object?", obj.shape
    return f"what size is the {obj.name}?", obj.size


def _count(scene: list[ShapeObject], rng: np.random.Generator) -> tuple[str, str]:
    sub_kind = _pick(rng, ("all", "color", "shape"))
    if sub_kind == "all":
        return "how many shapes are there?", NUMBER_WORDS[len(scene)]
    attribute = sub_kind
    values = list(COLORS) if attribute == "color" else list(SHAPES)
    present = [getattr(obj, attribute) for obj in scene]
    count_of = {value: present.count(value) for value in values}
    # Draw the answer first, uniformly over the counts this scene allows (absent values give "zero"),
    # so that "one" does not dominate.
    number = _pick(rng, sorted(set(count_of.values())))
    value = _pick(rng, [value for value in values if count_of[value] == number])
    answer = NUMBER_WORDS[number]
    if attribute == "color":
        return f"how many {value} shapes are there?", answer
    return f"how many {value}s are there?", answer


def _existence(scene: list[ShapeObject], rng: np.random.Generator) -> tuple[str, str]:
    if rng.random() < 0.5:
        obj = _pick(rng, scene)
        return f"is there a {obj.name}?", "yes"
    present = {(obj.color, obj.shape) for obj in scene}
    absent = [(color, shape) for color in COLORS for shape in SHAPES if (color, shape) not in present]
    color, shape = _pick(rng, absent)
    return f"is there a {color} {shape}?", "no"


def _spatial(scene: list[ShapeObject], rng: np.random.Generator) -> tuple[str, str]:
    first, second = (scene[int(i)] for i in rng.choice(len(scene), size=2, replace=False))
    side = "left" if first.x < second.x else "right"
    if rng.random() < 0.5:
        return f"is the {first.name} left or right of the {second.name}?", side
    answer = "yes" if rng.random() < 0.5 else "no"
    other = "right" if side == "left" else "left"
    asked = side if answer == "yes" else other
    return f"is the {first.name} to the {asked} of the {second.name}?", answer


def _majority(values: Sequence[str]) -> str | None:
    if not values:
        return None
    counts = Counter(values)
    return min(counts, key=lambda value: (-counts[value], value))  # ties: alphabetical, deterministic


def _accuracy(guess: str | None, answers: Sequence[str]) -> float | None:
    if guess is None or not answers:
        return None
    return sum(answer == guess for answer in answers) / len(answers)


def _statistics(records_by_split: dict[str, list[dict]], *, seed: int, image_size: int) -> dict:
    """The contents of stats.json.

    `baselines` maps each question type, and "overall", to the test accuracy of always giving the most
    frequent train answer of that type (None if test has no question of the type); "overall" is that
    per-type rule over all test questions - what a model gets from the question alone. `majority_answers`
    says which answers those are. `single_answer_baseline` is one answer for every question, and
    `label_baseline` the most frequent train label.
    """
    train, test = records_by_split["train"], records_by_split["test"]
    baselines: dict[str, float | None] = {}
    majority_answers: dict[str, str | None] = {}
    hits = 0
    for kind in QUESTION_TYPES:
        guess = _majority([r["answer"] for r in train if r["question_type"] == kind])
        answers = [r["answer"] for r in test if r["question_type"] == kind]
        majority_answers[kind] = guess
        baselines[kind] = _accuracy(guess, answers)
        hits += sum(answer == guess for answer in answers)
    baselines["overall"] = hits / len(test) if test else None
    single = _majority([r["answer"] for r in train])
    label = _majority([r["label"] for r in train])
    return {
        "benchmark": "shapes",
        "seed": seed,
        "image_size": image_size,
        "counts": {split: len(records) for split, records in records_by_split.items()},
        "question_types": {
            split: {kind: sum(r["question_type"] == kind for r in records) for kind in QUESTION_TYPES}
            for split, records in records_by_split.items()
        },
        "distinct_captions": {
            split: len({r["text"] for r in records}) for split, records in records_by_split.items()
        },
        "labels": {
            split: dict(sorted(Counter(r["label"] for r in records).items()))
            for split, records in records_by_split.items()
        },
        "baselines": baselines,
        "majority_answers": majority_answers,
        "single_answer_baseline": {
            "answer": single,
            "accuracy": _accuracy(single, [r["answer"] for r in test]),
        },
        "label_baseline": {"answer": label, "accuracy": _accuracy(label, [r["label"] for r in test])},
    }


def format_baselines(stats: dict) -> str:
    """A small table of the test-split baselines in `stats` (as returned by `synthesize`)."""

    def row(name: str, accuracy: float | None, answer: str) -> str:
        shown = "n/a" if accuracy is None else f"{accuracy:.3f}"
        return f"  {name:<22} {shown:>6}  {answer}"

    lines = ["shapes: majority baselines on test (always give the most frequent train answer)"]
    for kind in QUESTION_TYPES:
        lines.append(row(f"vqa {kind}", stats["baselines"][kind], f"({stats['majority_answers'][kind]})"))
    lines.append(row("vqa overall", stats["baselines"]["overall"], "(per-type majority)"))
    single = stats["single_answer_baseline"]
    lines.append(row("vqa one answer for all", single["accuracy"], f"({single['answer']})"))
    label = stats["label_baseline"]
    lines.append(row("classification label", label["accuracy"], f"({label['answer']})"))
    return "\n".join(lines)
