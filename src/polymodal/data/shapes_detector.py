"""A deterministic detector of the built-in shapes, and GenEval's rules over what it finds.

GenEval scores a text-to-image model by running an object detector on its images. For the built-in shapes
no learned detector is needed: the palette is known, so each pixel's colour is explained as the background
mixed with one palette colour (anti-aliased edges mix the two), pixels at least half covered form
connected components, and each component's shape follows from how much of its bounding box it fills (a
square all of it, a circle π/4, a triangle half), its size from its width, its place from its box.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from .shapes import COLORS, SIZES
from .shapes_generation import CATEGORIES, relation_holds

MARGIN = 0.1  # a relation holds when the centres are this far apart along its axis (fraction of the width)
_SMALL_LARGE = (SIZES["small"] + SIZES["large"]) / 2  # widths below this are small
_FILL = (0.64, 0.89)  # fill of the box: triangle 0.5 < 0.64 ≤ circle 0.785 < 0.89 ≤ square 1.0
_MIN_AREA = 0.006  # components smaller than this share of the image are specks, not objects
_PALETTE = np.array(list(COLORS.values()), dtype=np.float64)  # (C, 3)
_NAMES = list(COLORS)


@dataclass(frozen=True)
class Detection:
    """One object found: shape, colour and size names, and its box centre as fractions of the width."""

    shape: str
    color: str
    size: str
    x: float
    y: float


def detect(image: Image.Image | np.ndarray) -> list[Detection]:
    """The objects in an image of the shapes world, left to right."""
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.float64)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"image: expected an RGB image (H, W, 3), got shape {rgb.shape}")
    height, width = rgb.shape[:2]
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    background = np.median(border, axis=0)  # (3,) the border is background (objects keep a gap)
    alpha, residual = _coverage(rgb, background)  # (C, H, W) each
    colour = residual.argmin(0)  # (H, W) the palette colour that best explains each pixel
    found = []
    for c, name in enumerate(_NAMES):
        mine = colour == c
        solid = mine & (alpha[c] >= 0.5) & (residual[c] < 60)
        for component in _components(solid):
            ys, xs = component[:, 0], component[:, 1]
            if len(ys) < _MIN_AREA * height * width:
                continue
            top, bottom, left, right = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            box = (slice(max(top - 1, 0), bottom + 1), slice(max(left - 1, 0), right + 1))  # edges included
            covered = float((alpha[c][box] * (mine[box] & (residual[c][box] < 60))).sum())
            w, h = right - left, bottom - top
            fill = covered / (w * h)
            shape = "triangle" if fill < _FILL[0] else ("circle" if fill < _FILL[1] else "square")
            found.append(Detection(shape, name, "small" if max(w, h) / width < _SMALL_LARGE else "large",
                                   (left + right) / 2 / width, (top + bottom) / 2 / height))
    return sorted(found, key=lambda d: (d.x, d.y))


def _coverage(rgb: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per palette colour c and pixel: α, the share of c in the pixel (background + α·(c − background)),
    and how far the pixel is from that mixture (RGB units)."""
    direction = _PALETTE - background  # (C, 3)
    offset = rgb - background  # (H, W, 3)
    alpha = np.einsum("hwk,ck->chw", offset, direction) / (direction**2).sum(1)[:, None, None]
    alpha = alpha.clip(0, 1)
    mixed = background + alpha[..., None] * direction[:, None, None, :]  # (C, H, W, 3)
    return alpha, np.linalg.norm(rgb[None] - mixed, axis=-1)


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """8-connected components of a boolean mask, each as (N, 2) (y, x) pixels."""
    seen = np.zeros_like(mask)
    height, width = mask.shape
    components = []
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        seen[start] = True
        stack, pixels = [start], []
        while stack:
            y, x = stack.pop()
            pixels.append((y, x))
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        stack.append((ny, nx))
        components.append(np.array(pixels))
    return components


def _matches(want: dict[str, Any], found: Iterable[Detection]) -> list[Detection]:
    return [d for d in found if d.shape == want["shape"] and want.get("color") in (None, d.color)
            and want.get("size") in (None, d.size)]


def satisfies(spec: dict[str, Any], found: Sequence[Detection], margin: float = MARGIN) -> bool:
    """GenEval's rule for one image: every object asked for is there (a counted one exactly as many
    times: over-counting fails), with its colour and size when named; a relation holds between some pair
    of the two objects by more than `margin`."""
    matched = []
    for want in spec["objects"]:
        hits = _matches(want, found)
        if len(hits) < 1 or (want["count"] > 1 and len(hits) != want["count"]):
            return False
        matched.append(hits)
    rel = spec.get("relation")
    if rel is None:
        return True
    return any(relation_holds(rel["relation"], (a.x, a.y), (b.x, b.y), margin)
               for a in matched[rel["a"]] for b in matched[rel["b"]] if a is not b)


def geneval_score(categories: Sequence[str], passed: Sequence[bool]) -> dict[str, float]:
    """The share of images that pass per category, and `overall`: GenEval's mean over the categories
    present (each category counts the same, whatever its number of prompts)."""
    if len(categories) != len(passed):
        raise ValueError(f"{len(categories)} categories for {len(passed)} results")
    scores = {}
    for category in CATEGORIES:
        mine = [p for c, p in zip(categories, passed) if c == category]
        if mine:
            scores[category] = sum(mine) / len(mine)
    scores["overall"] = sum(scores.values()) / len(scores) if scores else 0.0
    return scores
