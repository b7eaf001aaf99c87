"""Prompts to make sounds from: every sound has the beeps its prompt names, the held-out voice × pitch pairs
never sound in training, and the sound judge (a classifier trained on real sounds) hears real sounds right."""

from __future__ import annotations

import numpy as np
import pytest

from polymodal.data.manifest import read_manifest
from polymodal.data.media import read_audio
from polymodal.data.sound_generation import (HELD_OUT_SOUNDS, NUM_SAMPLES, SAMPLE_RATE, draw_spec, render_beeps,
                                             sound_prompt, synthesize_sound_generation)
from polymodal.data.sound_judge import sound_scores, trained_judge
from polymodal.errors import ConfigError


@pytest.fixture(scope="module")
def sounds(tmp_path_factory):
    out = tmp_path_factory.mktemp("sounds")
    synthesize_sound_generation(out, n_train=60, n_val=6, n_test=40, n_heldout=24, log=lambda _: None)
    return out


def _bursts(wave: np.ndarray) -> int:
    """Loud stretches of a waveform (5 ms windows above a tenth of the loudest), counted by hand."""
    windows = np.abs(wave[: len(wave) // 80 * 80]).reshape(-1, 80).max(1)
    loud = windows > 0.1 * windows.max()
    return int(loud[0]) + int(np.sum(loud[1:] & ~loud[:-1]))


def test_prompts_name_the_count_pitch_and_voice():
    assert sound_prompt({"voice": "buzz", "pitch": "high", "count": 2}) == "two high buzzes"
    assert sound_prompt({"voice": "whistle", "pitch": "low", "count": 1}) == "a low whistle"
    assert sound_prompt({"voice": "chirp", "pitch": "low", "count": 3}) == "three low chirps"


@pytest.mark.parametrize("count", [1, 2, 3])
def test_a_sound_has_as_many_beeps_as_its_prompt_says_at_its_pitch(count):
    rng = np.random.default_rng(count)
    for pitch, hz in (("low", 330.0), ("high", 880.0)):
        wave = render_beeps({"voice": "whistle", "pitch": pitch, "count": count}, rng)
        assert wave.shape == (NUM_SAMPLES,) and wave.dtype == np.float32
        assert _bursts(wave) == count
        spectrum = np.abs(np.fft.rfft(wave))
        peak = np.fft.rfftfreq(len(wave), 1 / SAMPLE_RATE)[spectrum.argmax()]
        assert abs(peak - hz) < 0.03 * hz  # the sine's pitch, detuned by at most 2%


def test_held_out_pairs_never_sound_in_training_and_every_file_matches_its_record(sounds):
    train, heldout = read_manifest(sounds / "sound-train.jsonl"), read_manifest(sounds / "sound-heldout.jsonl")
    pair = lambda r: (r["spec"]["voice"], r["spec"]["pitch"])  # noqa: E731
    assert not {pair(r) for r in train} & HELD_OUT_SOUNDS
    assert {pair(r) for r in heldout} == set(HELD_OUT_SOUNDS)
    for record in train[:10] + heldout[:5]:
        assert record["text"] == sound_prompt(record["spec"])
        wave = read_audio(record["audio"], sample_rate=SAMPLE_RATE)[0]
        assert len(wave) == NUM_SAMPLES and _bursts(wave) == record["spec"]["count"]
    with pytest.raises(ConfigError, match="n_test: expected a whole number"):
        synthesize_sound_generation(sounds / "x", n_test=-1, log=lambda _: None)


def test_held_out_draws_only_unheard_pairs():
    rng = np.random.default_rng(0)
    assert all((s["voice"], s["pitch"]) in HELD_OUT_SOUNDS for s in (draw_spec(rng, held_out=True) for _ in range(50)))
    assert not any((s["voice"], s["pitch"]) in HELD_OUT_SOUNDS for s in (draw_spec(rng) for _ in range(200)))


def test_the_judge_hears_real_sounds_right(sounds):
    """≥ 99% of real sounds it never trained on (the data set's, read back from their files) are named right
    in voice, pitch and count, held-out pairs included."""
    judge = trained_judge()
    for split in ("test", "heldout"):
        records = read_manifest(sounds / f"sound-{split}.jsonl")
        waves = np.stack([read_audio(r["audio"], sample_rate=SAMPLE_RATE)[0] for r in records])
        scores = sound_scores([r["spec"] for r in records], judge.judge(waves))
        assert scores["all"] >= 0.99, (split, scores)


def test_sound_scores_count_each_attribute_and_all_three():
    specs = [{"voice": "buzz", "pitch": "low", "count": 2}, {"voice": "bell", "pitch": "high", "count": 1}]
    heard = [{"voice": "buzz", "pitch": "high", "count": 2}, {"voice": "bell", "pitch": "high", "count": 1}]
    assert sound_scores(specs, heard) == {"voice": 1.0, "pitch": 0.5, "count": 1.0, "all": 0.5}
    heard[1] = {"voice": "horn", "pitch": "high", "count": 3}
    assert sound_scores(specs, heard) == {"voice": 0.5, "pitch": 0.5, "count": 0.5, "all": 0.0}
