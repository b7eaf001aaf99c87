"""Prompts to make clips from, for text-to-video generation on the built-in benchmark: "a small red circle
moving left", each with a clip that matches it and what a judge checks (`judge_clip`).

A clip is four 64 px frames at 4 frames per second: one shape of the image benchmark's (its colour,
shape and size) crossing the picture left, right, up or down by 0.12 of the width a frame, from a random
start that keeps its whole path inside, at a random place across the motion, on a slightly tinted
background. Clips are written as MP4 files with H.264 in RGB without loss (`libx264rgb`, qp 0), so the
shapes detector reads the frames a model learns from exactly as they were drawn.

A held-out split measures composition: the image benchmark's three held-out colour × shape pairs
(`shapes_generation.HELD_OUT_PAIRS`) never move in a training clip (nor appear in a training prompt).

The judge reads a clip with the shapes detector, frame by frame: the object is right when every frame
shows exactly one object and it has the asked shape, colour and size; the direction is right when the
object's centre moved along the asked axis, the asked way, by at least `MIN_TRAVEL` between the first
and the last frame, and less than that across it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .media import write_video
from .prompted import write_prompted_splits
from .shapes import _GAP, COLORS, SHAPES, SIZES, ShapeObject, render
from .shapes_detector import detect
from .shapes_generation import HELD_OUT_PAIRS

IMAGE_SIZE = 64
NUM_FRAMES = 4
FPS = 4
STEP = 0.12  # travel per frame, fractions of the width
DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
MIN_TRAVEL = 0.15  # the judge's margin: the path is 0.36 of the width
JUDGED = ("object", "direction")


def video_prompt(spec: dict[str, Any]) -> str:
    """{shape, color, size, direction} → e.g. "a small red circle moving left"."""
    return f"a {spec['size']} {spec['color']} {spec['shape']} moving {spec['direction']}"


def draw_spec(rng: np.random.Generator, *, held_out: bool = False) -> dict[str, Any]:
    """A shape, colour, size and direction: a colour × shape pair seen in training, or (held out) not."""
    pairs = [(c, s) for c in COLORS for s in SHAPES if ((c, s) in HELD_OUT_PAIRS) == held_out]
    color, shape = pairs[int(rng.integers(0, len(pairs)))]
    return {"shape": shape, "color": color, "size": str(rng.choice(list(SIZES))),
            "direction": str(rng.choice(list(DIRECTIONS)))}


def render_clip(spec: dict[str, Any], rng: np.random.Generator, image_size: int = IMAGE_SIZE) -> np.ndarray:
    """(NUM_FRAMES, S, S, 3) uint8: the shape crossing the picture as `spec` says."""
    half = SIZES[spec["size"]] / 2
    low, high = half + _GAP, 1 - half - _GAP
    dx, dy = DIRECTIONS[spec["direction"]]
    travel = STEP * (NUM_FRAMES - 1)
    along = rng.uniform(low, high - travel)  # where the path starts along its axis, going the positive way
    across = rng.uniform(low, high)
    start = along if dx + dy > 0 else along + travel
    background = tuple(int(v) for v in 235 + rng.integers(-12, 13, size=3))
    frames = []
    for t in range(NUM_FRAMES):
        position = start + (dx + dy) * STEP * t
        x, y = (position, across) if dx else (across, position)
        frames.append(np.asarray(render([ShapeObject(spec["shape"], spec["color"], spec["size"], x, y)],
                                        image_size, background)))
    return np.stack(frames)


def write_clip(path: str | Path, frames: np.ndarray) -> Path:
    """An MP4 of the frames, H.264 in RGB without loss."""
    return write_video(path, frames, fps=FPS, lossless=True)


def judge_clip(spec: dict[str, Any], frames: np.ndarray | Sequence[Any]) -> dict[str, bool]:
    """Whether a clip (T, S, S, 3) shows the asked object in every frame, and moving the asked way."""
    found = [detect(np.asarray(frame)) for frame in frames]
    right = all(len(f) == 1 and (f[0].shape, f[0].color, f[0].size) == (spec["shape"], spec["color"], spec["size"])
                for f in found)
    direction = False
    if all(len(f) == 1 for f in found):
        dx, dy = DIRECTIONS[spec["direction"]]
        moved = (found[-1][0].x - found[0][0].x, found[-1][0].y - found[0][0].y)
        along = moved[0] * dx + moved[1] * dy
        across = abs(moved[1]) if dx else abs(moved[0])
        direction = bool(along >= MIN_TRAVEL and across < MIN_TRAVEL)
    return {"object": right, "direction": direction}


def video_scores(specs: list[dict[str, Any]], verdicts: list[dict[str, bool]]) -> dict[str, float]:
    """The share of clips with the object right, the direction right, and both."""
    n = max(1, len(specs))
    scores = {name: sum(v[name] for v in verdicts) / n for name in JUDGED}
    scores["all"] = sum(all(v[name] for name in JUDGED) for v in verdicts) / n
    return scores


def synthesize_video_generation(out_dir: str | Path, *, n_train: int = 2000, n_val: int = 100, n_test: int = 200,
                                n_heldout: int = 100, seed: int = 0,
                                log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Write `clip-{train,val,test,heldout}.jsonl` and `clips/{split}/*.mp4` under `out_dir`.

    Each record: `id`, `video`, `text` (the prompt, which the clip satisfies), `category` ("motion") and
    `spec` {shape, color, size, direction}. Returns the statistics also written to `clip-stats.json`."""
    counts = {"train": n_train, "val": n_val, "test": n_test, "heldout": n_heldout}
    stats: dict[str, Any] = {"benchmark": "clips-generation", "seed": seed, "fps": FPS, "frames": NUM_FRAMES,
                             "held_out_pairs": sorted(" ".join(p) for p in HELD_OUT_PAIRS)}
    return write_prompted_splits(
        Path(out_dir), counts, name="clip", seed=seed, salt=13, field="video", suffix=".mp4", category="motion",
        draw=lambda rng, held_out: draw_spec(rng, held_out=held_out), prompt=video_prompt,
        write=lambda path, spec, rng: write_clip(path, render_clip(spec, rng)), tally="direction", stats=stats,
        log=log)
