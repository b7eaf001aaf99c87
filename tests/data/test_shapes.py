"""The shapes benchmark: determinism, valid manifests, and captions / answers that match the pixels."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from polymodal.data.manifest import check_manifest
from polymodal.data.shapes import (
    COLORS,
    QUESTION_TYPES,
    SIZES,
    ShapeObject,
    caption,
    make_question,
    make_scene,
    render,
    synthesize,
)

REQUIRED = ("image", "text", "question", "answer", "question_type", "label")
CAPTION_FORMATS = ("{}", "{} to the left of {}", "{}, {} and {} from left to right")
SPATIAL = r"is the (\w+ \w+) (?:to the (left|right) of|left or right of) the (\w+ \w+)\?"


def _synth(out: Path, seed: int = 0) -> dict:
    return synthesize(out, n_train=60, n_val=20, n_test=20, seed=seed, log=lambda line: None)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("shapes")
    return out, _synth(out)


def _records(out: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (out / f"{split}.jsonl").read_text().splitlines()]


def _parse_caption(text: str) -> list[tuple[str, str]]:
    """(colour, shape) of each object in the caption, in caption order."""
    return re.findall(r"\ba (\w+) (circle|square|triangle)\b", text)


def _color_pixels(image: np.ndarray, color: str) -> np.ndarray:
    """(N, 2) x, y of the pixels within a small distance of a palette colour."""
    distance = np.abs(image.astype(int) - np.array(COLORS[color])).sum(-1)
    ys, xs = np.nonzero(distance < 60)
    return np.stack([xs, ys], axis=1)


def test_same_seed_gives_identical_bytes_and_other_seed_differs(synth, tmp_path: Path) -> None:
    out, stats = synth
    again = tmp_path / "again"
    assert _synth(again) == stats
    assert _files(again) == _files(out)
    other = tmp_path / "other"
    _synth(other, seed=1)
    assert (other / "train.jsonl").read_bytes() != (out / "train.jsonl").read_bytes()
    assert (other / "images/train/000000.png").read_bytes() != (out / "images/train/000000.png").read_bytes()


def test_layout_and_records_are_valid(synth) -> None:
    out, stats = synth
    for split, n in (("train", 60), ("val", 20), ("test", 20)):
        records, problems = check_manifest(out / f"{split}.jsonl", required=REQUIRED)
        assert problems == []
        assert len(records) == n
        assert records[1]["id"] == f"{split}-000001"
        assert records[1]["image"] == str((out / "images" / split / "000001.png").resolve())
        assert Image.open(records[1]["image"]).size == (64, 64)
    assert json.loads((out / "stats.json").read_text()) == stats


def test_captions_name_objects_left_to_right_as_in_the_pixels(synth) -> None:
    out, _ = synth
    checked = 0
    for record in _records(out, "train") + _records(out, "test"):
        objects = _parse_caption(record["text"])
        template = CAPTION_FORMATS[len(objects) - 1]
        assert record["text"] == template.format(*(f"a {c} {s}" for c, s in objects))
        colors = [color for color, _ in objects]
        if len(set(colors)) < len(colors):
            continue  # two objects share a colour: their pixels cannot be told apart by colour alone
        image = np.asarray(Image.open(out / record["image"]).convert("RGB"))
        centres = [_color_pixels(image, color)[:, 0].mean() for color in colors]
        assert centres == sorted(centres), record
        assert all(b - a >= 64 / 8 - 1 for a, b in zip(centres, centres[1:])), record
        checked += 1
    assert checked > 40


def test_answers_agree_with_the_caption(synth) -> None:
    out, _ = synth
    words = ["zero", "one", "two", "three"]
    for record in _records(out, "train") + _records(out, "val") + _records(out, "test"):
        objects = _parse_caption(record["text"])
        question, answer = record["question"], record["answer"]
        assert answer == answer.lower() and " " not in answer
        assert record["label"] == objects[0][1]  # the leftmost object's shape
        if match := re.fullmatch(r"is there a (\w+) (\w+)\?", question):
            assert answer == ("yes" if match.groups() in objects else "no"), record
        elif question == "how many shapes are there?":
            assert answer == words[len(objects)]
        elif match := re.fullmatch(r"how many (\w+) shapes are there\?", question):
            assert answer == words[sum(c == match[1] for c, _ in objects)], record
        elif match := re.fullmatch(r"how many (\w+)s are there\?", question):
            assert answer == words[sum(s == match[1] for _, s in objects)], record
        elif match := re.fullmatch(r"what color is the (\w+)\?", question):
            assert [c for c, s in objects if s == match[1]] == [answer], record
        elif match := re.fullmatch(r"what shape is the (\w+) object\?", question):
            assert [s for c, s in objects if c == match[1]] == [answer], record
        elif match := re.fullmatch(SPATIAL, question):
            names = [f"{c} {s}" for c, s in objects]
            actual = "left" if names.index(match[1]) < names.index(match[3]) else "right"
            expected = actual if match[2] is None else ("yes" if match[2] == actual else "no")
            assert answer == expected, record
        else:
            assert re.fullmatch(r"what size is the \w+ \w+\?", question), record
            assert answer in SIZES


def test_question_types_and_baselines(synth) -> None:
    out, stats = synth
    assert stats["counts"] == {"train": 60, "val": 20, "test": 20}
    assert all(stats["question_types"]["train"][kind] > 0 for kind in QUESTION_TYPES)
    assert 0 < stats["distinct_captions"]["train"] <= 60
    assert set(stats["baselines"]) == {*QUESTION_TYPES, "overall"}
    test = _records(out, "test")
    train = _records(out, "train")
    for kind in QUESTION_TYPES:  # recompute each baseline from the manifests
        answers = Counter(r["answer"] for r in train if r["question_type"] == kind)
        guess = stats["majority_answers"][kind]
        assert answers[guess] == max(answers.values())
        asked = [r for r in test if r["question_type"] == kind]
        expected = sum(r["answer"] == guess for r in asked) / len(asked) if asked else None
        assert stats["baselines"][kind] == expected
    overall = sum(r["answer"] == stats["majority_answers"][r["question_type"]] for r in test) / len(test)
    assert stats["baselines"]["overall"] == overall
    label = stats["label_baseline"]["answer"]
    assert stats["label_baseline"]["accuracy"] == sum(r["label"] == label for r in test) / len(test)


def test_hand_made_scene_caption_and_pixels() -> None:
    scene = [
        ShapeObject("square", "blue", "large", 0.75, 0.3),
        ShapeObject("circle", "red", "small", 0.2, 0.7),
        ShapeObject("triangle", "green", "large", 0.45, 0.7),
    ]
    assert caption(scene) == "a red circle, a green triangle and a blue square from left to right"
    assert caption(scene[:2]) == "a red circle to the left of a blue square"
    assert caption(scene[:1]) == "a blue square"
    image = np.asarray(render(scene, 64, (235, 235, 235)))
    for obj in scene:  # the centre pixel of each object has its colour; the corners are background
        assert tuple(image[int(obj.y * 64), int(obj.x * 64)]) == COLORS[obj.color]
    assert tuple(image[0, 0]) == (235, 235, 235)
    # size: a large square covers about (24 / 14)^2 times the pixels of a small one
    small = np.asarray(render([ShapeObject("square", "blue", "small", 0.5, 0.5)], 64, (235, 235, 235)))
    ratio = len(_color_pixels(image, "blue")) / len(_color_pixels(small, "blue"))
    assert ratio == pytest.approx((24 / 14) ** 2, rel=0.15)


def test_scene_invariants_and_answer_balance() -> None:
    rng = np.random.default_rng(123)
    answers: dict[str, Counter] = {kind: Counter() for kind in QUESTION_TYPES}
    for _ in range(1500):
        scene = make_scene(rng)
        assert 1 <= len(scene) <= 3
        assert len({(o.color, o.shape) for o in scene}) == len(scene)
        for i, a in enumerate(scene):
            half = SIZES[a.size] / 2
            assert half < a.x < 1 - half and half < a.y < 1 - half
            for b in scene[i + 1 :]:
                assert abs(a.x - b.x) >= 1 / 8
                reach = half + SIZES[b.size] / 2
                assert abs(a.x - b.x) >= reach or abs(a.y - b.y) >= reach  # boxes do not overlap
        _, answer, kind = make_question(scene, rng)
        answers[kind][answer] += 1
    existence = answers["existence"]
    assert abs(existence["yes"] - existence["no"]) < 0.15 * sum(existence.values())
    spatial = answers["spatial"]
    assert set(spatial) == {"yes", "no", "left", "right"}
    assert max(spatial.values()) < 0.35 * sum(spatial.values())
    assert answers["count"]["zero"] > 0
    assert set(answers["attribute"]) >= {"small", "large", "circle", "red"}
