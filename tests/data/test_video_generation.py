"""Prompts to make clips from: each clip shows the prompt's object crossing the picture the prompt's way, is
stored without loss, the held-out colour × shape pairs never move in training, and the judge reads real
clips right (object and direction) and catches clips that are wrong in either."""

from __future__ import annotations

import numpy as np
import pytest

from polymodal.data.manifest import read_manifest
from polymodal.data.media import decode_video
from polymodal.data.shapes_detector import detect
from polymodal.data.shapes_generation import HELD_OUT_PAIRS
from polymodal.data.video_generation import (NUM_FRAMES, STEP, draw_spec, judge_clip, render_clip,
                                             synthesize_video_generation, video_prompt, video_scores, write_clip)
from polymodal.errors import ConfigError


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    out = tmp_path_factory.mktemp("clips")
    synthesize_video_generation(out, n_train=40, n_val=4, n_test=40, n_heldout=20, log=lambda _: None)
    return out


def test_prompts_name_the_object_and_its_way():
    spec = {"shape": "circle", "color": "red", "size": "small", "direction": "left"}
    assert video_prompt(spec) == "a small red circle moving left"


@pytest.mark.parametrize("direction, axis, sign", [("left", 0, -1), ("right", 0, 1), ("up", 1, -1), ("down", 1, 1)])
def test_the_object_crosses_the_picture_the_asked_way_a_step_a_frame(direction, axis, sign):
    spec = {"shape": "square", "color": "blue", "size": "large", "direction": direction}
    frames = render_clip(spec, np.random.default_rng(1))
    assert frames.shape == (NUM_FRAMES, 64, 64, 3) and frames.dtype == np.uint8
    centres = [(d[0].x, d[0].y) for d in (detect(f) for f in frames)]
    steps = np.diff(np.array(centres), axis=0)  # (T - 1, 2)
    np.testing.assert_allclose(steps[:, axis], sign * STEP, atol=1.5 / 64)  # a pixel and a half of rounding
    np.testing.assert_allclose(steps[:, 1 - axis], 0, atol=1 / 64)


def test_clips_are_stored_without_loss_and_held_out_pairs_never_move_in_training(clips, tmp_path):
    frames = render_clip(draw_spec(np.random.default_rng(2)), np.random.default_rng(3))
    decoded, times = decode_video(write_clip(tmp_path / "c.mp4", frames), size=64)
    assert np.array_equal(decoded, frames) and len(times) == NUM_FRAMES
    train, heldout = read_manifest(clips / "clip-train.jsonl"), read_manifest(clips / "clip-heldout.jsonl")
    pair = lambda r: (r["spec"]["color"], r["spec"]["shape"])  # noqa: E731
    assert not {pair(r) for r in train} & HELD_OUT_PAIRS and {pair(r) for r in heldout} <= HELD_OUT_PAIRS
    assert all(r["text"] == video_prompt(r["spec"]) for r in train + heldout)
    with pytest.raises(ConfigError, match="n_val: expected a whole number"):
        synthesize_video_generation(tmp_path / "x", n_val=-2, log=lambda _: None)


def test_the_judge_reads_real_clips_right(clips):
    for split in ("test", "heldout"):
        records = read_manifest(clips / f"clip-{split}.jsonl")
        verdicts = [judge_clip(r["spec"], decode_video(r["video"], size=64)[0]) for r in records]
        assert video_scores([r["spec"] for r in records], verdicts)["all"] == 1.0, split


def test_the_judge_fails_a_wrong_object_a_wrong_way_a_still_one_and_a_second_object():
    rng = np.random.default_rng(4)
    spec = {"shape": "triangle", "color": "green", "size": "large", "direction": "up"}
    frames = render_clip(spec, rng)
    assert judge_clip(spec, frames) == {"object": True, "direction": True}
    assert judge_clip({**spec, "color": "red"}, frames) == {"object": False, "direction": True}
    assert judge_clip({**spec, "size": "small"}, frames) == {"object": False, "direction": True}
    assert judge_clip({**spec, "direction": "down"}, frames) == {"object": True, "direction": False}
    assert judge_clip({**spec, "direction": "left"}, frames) == {"object": True, "direction": False}
    still = np.stack([frames[0]] * NUM_FRAMES)
    assert judge_clip(spec, still) == {"object": True, "direction": False}
    crowded = frames.copy()
    crowded[2] = render_clip({**spec, "color": "red", "direction": "down"}, rng)[0]  # another object in one frame
    assert judge_clip(spec, crowded)["object"] is False


def test_video_scores_count_each_and_both():
    verdicts = [{"object": True, "direction": True}, {"object": True, "direction": False},
                {"object": False, "direction": False}, {"object": False, "direction": True}]
    assert video_scores([{}] * 4, verdicts) == {"object": 0.5, "direction": 0.5, "all": 0.25}
