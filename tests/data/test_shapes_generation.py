"""GenEval-style prompt sets: every image satisfies its prompt, categories are balanced, and the held-out
split's colour-shape pairs and relations never occur in training."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from polymodal.data.manifest import read_manifest
from polymodal.data.shapes_generation import (CATEGORIES, HELD_OUT_PAIRS, HELD_OUT_RELATIONS, is_unseen,
                                              make_prompt, relation_holds, synthesize_generation)
from polymodal.errors import ConfigError
from polymodal.data.shapes_detector import detect, satisfies


@pytest.fixture(scope="module")
def generation(tmp_path_factory):
    out = tmp_path_factory.mktemp("generation")
    synthesize_generation(out, n_train=140, n_val=14, n_test=70, n_heldout=42, log=lambda _: None)
    return out


def test_every_image_satisfies_its_prompt_and_the_categories_are_balanced(generation):
    for split in ("train", "test"):
        records = read_manifest(generation / f"{split}.jsonl")
        assert [r["category"] for r in records] == [CATEGORIES[i % 7] for i in range(len(records))]
        assert all(satisfies(r["spec"], detect(Image.open(r["image"]))) for r in records)


def test_held_out_pairs_and_relations_never_occur_in_training(generation):
    train = read_manifest(generation / "train.jsonl")
    heldout = read_manifest(generation / "heldout.jsonl")
    assert not any(is_unseen(r["spec"]) for r in train) and all(is_unseen(r["spec"]) for r in heldout)
    seen_pairs = {(d.color, d.shape) for r in train for d in detect(Image.open(r["image"]))}
    assert not seen_pairs & HELD_OUT_PAIRS and len(seen_pairs) == 15 - 3  # every other pair is drawn
    assert all(satisfies(r["spec"], detect(Image.open(r["image"]))) for r in heldout)
    asked = {r["category"] for r in heldout}
    assert {"colors", "color_attr", "position"} <= asked and not asked & {"single_object", "counting"}


def test_prompts_say_what_the_spec_asks():
    rng = np.random.default_rng(0)
    for category in CATEGORIES:
        for _ in range(20):
            kind, spec, prompt, scene = make_prompt(category, rng)
            assert kind == category and not is_unseen(spec)
            for want in spec["objects"]:
                assert want["shape"] in prompt and (want["color"] is None or want["color"] in prompt)
            if category == "counting":
                n = spec["objects"][0]["count"]
                assert prompt.startswith(("two ", "three ", "four ")[n - 2]) and len(scene) == n
    _, spec, prompt, _ = make_prompt("position", np.random.default_rng(1), held_out=True)
    objects, rel = spec["objects"], spec["relation"]
    assert (objects[0]["shape"], rel["relation"], objects[1]["shape"]) in HELD_OUT_RELATIONS


def test_relations_by_hand_and_bad_sizes():
    assert relation_holds("left of", (0.2, 0.5), (0.5, 0.5), 0.1)
    assert not relation_holds("left of", (0.45, 0.5), (0.5, 0.5), 0.1)  # within the margin
    assert relation_holds("above", (0.5, 0.2), (0.5, 0.6), 0.1) and not relation_holds("below", (0.5, 0.2), (0.5, 0.6), 0.1)
    assert relation_holds("right of", (0.8, 0.1), (0.5, 0.9), 0.1)
    with pytest.raises(ConfigError, match="image_size: expected at least 48"):
        synthesize_generation("/nonexistent", image_size=32)
