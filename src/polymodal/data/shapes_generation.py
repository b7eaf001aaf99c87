"""GenEval-style prompt sets for the built-in shapes: prompts to draw from, each with the image that
matches it and the rule a detector checks (`data/shapes_detector.py`).

Seven categories, as GenEval's six plus sizes: a single object ("a circle"), two objects ("a circle and a
square"), counting ("three triangles"), colours ("a blue square"), position ("a circle to the left of a
square"), colour attribution ("a red circle and a blue square") and sizes ("a small yellow triangle").

A held-out split measures composition rather than memory: three colour × shape pairs never appear in a
training image (nor in any prompt there), and three (shape, relation, shape) position prompts are never
asked in training. Held-out prompts name an unseen pair or ask an unseen relation; their objects and words
all occur in training, only not together.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .manifest import write_manifest
from .shapes import _GAP, COLORS, SHAPES, SIZES, ShapeObject, render

CATEGORIES = ("single_object", "two_objects", "counting", "colors", "position", "color_attr", "sizes")
RELATIONS = ("left of", "right of", "above", "below")
NUMBERS = {2: "two", 3: "three", 4: "four"}
HELD_OUT_PAIRS = frozenset({("purple", "circle"), ("yellow", "square"), ("green", "triangle")})
HELD_OUT_RELATIONS = frozenset({("circle", "above", "triangle"), ("square", "right of", "circle"),
                                ("triangle", "below", "square")})
SPLITS = ("train", "val", "test", "heldout")
_MIN_APART = 0.12  # centres differ by this much along a prompt's relation axis (the detector's margin is 0.1)
IMAGE_SIZE = 64


def synthesize_generation(out_dir: str | Path, *, n_train: int = 6000, n_val: int = 210, n_test: int = 553,
                          n_heldout: int = 210, seed: int = 0, image_size: int = IMAGE_SIZE,
                          log: Callable[[str], Any] = print) -> dict:
    """Write `{train,val,test,heldout}.jsonl` and `images/{split}/*.png` under `out_dir`.

    Each record: `id`, `image`, `text` (the prompt, which the image satisfies), `category` and `spec` (what
    the detector checks: `objects`, each {shape, color, size, count} with None for "any", and `relation`
    {a, relation, b} indexing `objects`, or None). Categories are equally frequent in every split; test
    has GenEval's 553 prompts by default. Returns the statistics also written to `stats.json`.
    """
    counts = {"train": n_train, "val": n_val, "test": n_test, "heldout": n_heldout}
    for split, n in counts.items():
        if not isinstance(n, int) or n < 0:
            raise ConfigError(f"n_{split}: expected a whole number of at least 0, got {n!r}")
    if image_size < 48:
        raise ConfigError(f"image_size: expected at least 48 pixels (small objects must stay readable), got {image_size}")
    out = Path(out_dir)
    stats: dict[str, Any] = {"benchmark": "shapes-generation", "seed": seed, "image_size": image_size,
                             "held_out_pairs": sorted(" ".join(p) for p in HELD_OUT_PAIRS),
                             "held_out_relations": sorted(" ".join(r) for r in HELD_OUT_RELATIONS)}
    for split_index, split in enumerate(SPLITS):
        rng = np.random.default_rng((seed, 7, split_index))
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        records = []
        for index in range(counts[split]):
            category, spec, prompt, scene = make_prompt(CATEGORIES[index % len(CATEGORIES)], rng,
                                                        held_out=split == "heldout")
            background = tuple(int(v) for v in 235 + rng.integers(-12, 13, size=3))
            path = f"images/{split}/{index:06d}.png"
            render(scene, image_size, background).save(out / path, format="PNG")
            records.append({"id": f"{split}-{index:06d}", "image": path, "text": prompt, "category": category,
                            "spec": spec})
        write_manifest(out / f"{split}.jsonl", records)
        log(f"shapes-generation: wrote {len(records)} {split} records to {out / f'{split}.jsonl'}")
        stats[split] = {"count": len(records), "categories": dict(Counter(r["category"] for r in records)),
                        "distinct_prompts": len({r["text"] for r in records})}
    (out / "stats.json").write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return stats


def is_unseen(spec: dict[str, Any]) -> bool:
    """Whether a prompt names a held-out colour × shape pair or asks a held-out relation."""
    objects = spec["objects"]
    if any((o["color"], o["shape"]) in HELD_OUT_PAIRS for o in objects):
        return True
    rel = spec.get("relation")
    return rel is not None and (objects[rel["a"]]["shape"], rel["relation"], objects[rel["b"]]["shape"]) in HELD_OUT_RELATIONS


def make_prompt(category: str, rng: np.random.Generator, *, held_out: bool = False,
                ) -> tuple[str, dict[str, Any], str, list[ShapeObject]]:
    """A prompt of `category` (its category, spec, text) and a scene that satisfies it, unseen (held out)
    or seen. A held-out prompt of a category that names no colour or relation becomes one that does."""
    if held_out and category in ("single_object", "two_objects", "counting"):
        category = ("colors", "color_attr", "sizes")[int(rng.integers(0, 3))]
    for _ in range(1000):
        spec, prompt = _draw_spec(category, rng)
        if is_unseen(spec) == held_out:
            scene = _scene_for(spec, rng, allow_unseen=held_out)
            if scene is not None:
                return category, spec, prompt, scene
    raise RuntimeError(f"no {'held-out' if held_out else 'seen'} {category} prompt fits")  # pragma: no cover


def _pick(rng: np.random.Generator, items: Sequence) -> Any:
    return items[int(rng.integers(0, len(items)))]


def _object(shape: str, color: str | None = None, size: str | None = None, count: int = 1) -> dict[str, Any]:
    return {"shape": shape, "color": color, "size": size, "count": count}


def _words(o: dict[str, Any], article: bool = True) -> str:
    words = [w for w in (o["size"], o["color"], o["shape"]) if w]
    return ("a " if article else "") + " ".join(words)


def _draw_spec(category: str, rng: np.random.Generator) -> tuple[dict[str, Any], str]:
    colors, shapes = list(COLORS), list(SHAPES)
    relation = None
    if category == "single_object":
        objects = [_object(_pick(rng, shapes))]
        prompt = _words(objects[0])
    elif category == "two_objects":
        a, b = rng.choice(len(shapes), 2, replace=False)
        objects = [_object(shapes[a]), _object(shapes[b])]
        prompt = f"{_words(objects[0])} and {_words(objects[1])}"
    elif category == "counting":
        n = int(rng.integers(2, 5))
        objects = [_object(_pick(rng, shapes), count=n)]
        prompt = f"{NUMBERS[n]} {objects[0]['shape']}s"
    elif category == "colors":
        objects = [_object(_pick(rng, shapes), _pick(rng, colors))]
        prompt = _words(objects[0])
    elif category == "position":
        a, b = rng.choice(len(shapes), 2, replace=False)
        objects = [_object(shapes[a]), _object(shapes[b])]
        relation = {"a": 0, "relation": _pick(rng, RELATIONS), "b": 1}
        word = relation["relation"]
        prompt = f"{_words(objects[0])} {'to the ' + word if word in ('left of', 'right of') else word} {_words(objects[1])}"
    elif category == "color_attr":
        a, b = rng.choice(len(shapes), 2, replace=False)
        ca, cb = rng.choice(len(colors), 2, replace=False)
        objects = [_object(shapes[a], colors[ca]), _object(shapes[b], colors[cb])]
        prompt = f"{_words(objects[0])} and {_words(objects[1])}"
    elif category == "sizes":
        objects = [_object(_pick(rng, shapes), _pick(rng, colors), _pick(rng, list(SIZES)))]
        prompt = _words(objects[0])
    else:
        raise ValueError(f"category: expected one of {', '.join(CATEGORIES)}, got {category!r}")
    return {"objects": objects, "relation": relation}, prompt


def _scene_for(spec: dict[str, Any], rng: np.random.Generator, *, allow_unseen: bool) -> list[ShapeObject] | None:
    """Objects that satisfy `spec` and nothing more: every object asked for (each of a count), coloured
    and sized as asked (else drawn), placed apart; a training scene never shows a held-out pair."""
    wanted = []
    for o in spec["objects"]:
        for _ in range(o["count"]):
            color = o["color"]
            while color is None or (not allow_unseen and (color, o["shape"]) in HELD_OUT_PAIRS):
                color = _pick(rng, list(COLORS))
            wanted.append((o["shape"], color, o["size"] or ("small" if o["count"] > 2 else _pick(rng, list(SIZES)))))
    for _ in range(200):
        placed: list[ShapeObject] = []
        for shape, color, size in wanted:
            half = SIZES[size] / 2
            for _ in range(60):
                x, y = rng.uniform(half + _GAP, 1 - half - _GAP, size=2)
                if all(_apart(x, y, half, other) for other in placed):
                    placed.append(ShapeObject(shape, color, size, float(x), float(y)))
                    break
            else:
                break
        if len(placed) == len(wanted) and _relation_holds(spec, placed):
            return placed
    return None


def _apart(x: float, y: float, half: float, other: ShapeObject) -> bool:
    reach = half + SIZES[other.size] / 2 + _GAP
    return abs(x - other.x) >= reach or abs(y - other.y) >= reach  # bounding boxes apart


def _relation_holds(spec: dict[str, Any], scene: list[ShapeObject]) -> bool:
    rel = spec.get("relation")
    if rel is None:
        return True
    a, b = scene[rel["a"]], scene[rel["b"]]  # one object per entry in position prompts
    return relation_holds(rel["relation"], (a.x, a.y), (b.x, b.y), _MIN_APART)


def relation_holds(relation: str, a: tuple[float, float], b: tuple[float, float], margin: float) -> bool:
    """Whether centre `a` is `relation` of centre `b` (fractions of the width; y grows downwards) by more
    than `margin` along that axis."""
    dx, dy = a[0] - b[0], a[1] - b[1]
    return {"left of": -dx, "right of": dx, "above": -dy, "below": dy}[relation] > margin
