"""The shapes detector against the renderer's own scenes, and GenEval's rules by hand."""

from __future__ import annotations

import numpy as np
import pytest

from polymodal.data.shapes import make_scene, render
from polymodal.data.shapes_detector import Detection, detect, geneval_score, satisfies


@pytest.mark.parametrize("image_size", [64, 96])
def test_the_detector_reads_the_renderers_scenes_exactly(image_size):
    """Shape, colour and size of every object, and its centre within 2% of the width, in ≥ 99% of 200
    random scenes of one to three objects on tinted backgrounds."""
    rng = np.random.default_rng(image_size)
    exact = 0
    for _ in range(200):
        scene = make_scene(rng)
        background = tuple(int(v) for v in 235 + rng.integers(-12, 13, size=3))
        found = detect(render(scene, image_size, background))
        names = sorted((o.shape, o.color, o.size) for o in scene) == sorted((d.shape, d.color, d.size) for d in found)
        placed = all(any(abs(o.x - d.x) < 0.02 and abs(o.y - d.y) < 0.02 for d in found) for o in scene)
        exact += names and placed
    assert exact >= 198


def test_noise_and_specks_are_not_objects():
    rng = np.random.default_rng(0)
    image = np.full((64, 64, 3), 235.0) + rng.normal(0, 4, (64, 64, 3))  # a noisy empty background
    image[10:12, 10:12] = (220, 30, 30)  # a 4-pixel red speck
    assert detect(image.clip(0, 255).astype(np.uint8)) == []
    with pytest.raises(ValueError, match=r"expected an RGB image \(H, W, 3\)"):
        detect(np.zeros((8, 8)))


def _d(shape, color="red", size="small", x=0.5, y=0.5):
    return Detection(shape, color, size, x, y)


def test_geneval_rules_by_hand():
    circle = {"shape": "circle", "color": None, "size": None, "count": 1}
    red_circle = dict(circle, color="red")
    assert satisfies({"objects": [circle]}, [_d("circle", "blue"), _d("square")])  # any colour, extras allowed
    assert not satisfies({"objects": [red_circle]}, [_d("circle", "blue")])
    assert not satisfies({"objects": [dict(circle, size="large")]}, [_d("circle")])
    three = dict(circle, count=3)
    assert satisfies({"objects": [three]}, [_d("circle")] * 3)
    assert not satisfies({"objects": [three]}, [_d("circle")] * 4)  # over-counting fails
    assert not satisfies({"objects": [three]}, [_d("circle")] * 2)
    square = {"shape": "square", "color": None, "size": None, "count": 1}
    left = {"objects": [circle, square], "relation": {"a": 0, "relation": "left of", "b": 1}}
    assert satisfies(left, [_d("circle", x=0.2), _d("square", x=0.7)])
    assert not satisfies(left, [_d("circle", x=0.65), _d("square", x=0.7)])  # within the 0.1 margin
    assert not satisfies(left, [_d("circle", x=0.8), _d("square", x=0.2)])
    assert satisfies(left, [_d("circle", x=0.8), _d("circle", x=0.1), _d("square", x=0.5)])  # some pair holds
    attr = {"objects": [red_circle, dict(square, color="blue")]}
    assert not satisfies(attr, [_d("circle", "blue"), _d("square", "red")])  # colours swapped


def test_the_overall_score_is_the_mean_of_the_categories_not_of_the_images():
    scores = geneval_score(["colors", "colors", "colors", "counting"], [True, True, True, False])
    assert scores == {"colors": 1.0, "counting": 0.0, "overall": 0.5}  # per image it would be 0.75
    with pytest.raises(ValueError, match="2 categories for 1 results"):
        geneval_score(["colors", "counting"], [True])
