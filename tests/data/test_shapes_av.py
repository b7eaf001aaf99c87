"""The audio-visual benchmark: deterministic, physically consistent, answers derivable from the media."""

import json

import numpy as np
import pytest

from polymodal.data.media import read_audio, read_video
from polymodal.data.shapes import COLORS
from polymodal.data.shapes_av import (_HI, _LO, DIRECTIONS, FPS, NUM_FRAMES, PITCHES, SAMPLE_RATE, make_clip,
                                      render_sound, synthesize_av)


@pytest.fixture(scope="module")
def av_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("av")
    stats = synthesize_av(out, n_train=60, n_val=10, n_test=30, seed=3, log=lambda _: None)
    return out / "av", stats


def test_same_seed_same_records_and_sound(av_data, tmp_path):
    root, _ = av_data
    synthesize_av(tmp_path, n_train=60, n_val=10, n_test=30, seed=3, log=lambda _: None)
    assert (tmp_path / "av" / "train.jsonl").read_text() == (root / "train.jsonl").read_text()
    assert (tmp_path / "av" / "clips/test/000007.wav").read_bytes() == (root / "clips/test/000007.wav").read_bytes()


def test_paths_stay_inside_and_bounces_touch_the_wall():
    rng = np.random.default_rng(0)
    for _ in range(300):
        clip = make_clip(rng)
        for m in clip.movers:
            for t in np.linspace(0, NUM_FRAMES / FPS, 33):
                x, y = m.at(t)
                assert _LO - 1e-9 <= x <= _HI + 1e-9 and _LO - 1e-9 <= y <= _HI + 1e-9
            if m.bounce is not None:
                x, y = m.at(m.bounce)
                assert min(abs(v - w) for v in (x, y) for w in (_LO, _HI)) < 1e-9
        if clip.maker is not None:  # in sync: the beep starts when the sounding shape bounces
            assert clip.beeps == (clip.movers[clip.maker].bounce,)
        elif any(m.bounce is not None for m in clip.movers):  # out of sync: clearly apart
            assert abs(clip.beeps[0] - clip.movers[0].bounce) >= 0.4


def test_sound_has_the_beeps_and_pitch_it_claims():
    rng = np.random.default_rng(1)
    for _ in range(30):
        clip = make_clip(rng)
        wave = render_sound(clip)
        loud = np.convolve(np.abs(wave) > 0.05, np.ones(80), mode="same") > 0  # (S,) sound present
        onsets = np.flatnonzero(np.diff(loud.astype(int)) == 1) / SAMPLE_RATE
        assert len(onsets) == len(clip.beeps)
        np.testing.assert_allclose(onsets, clip.beeps, atol=0.01)
        if clip.sound == "whistle":
            start = int(clip.beeps[0] * SAMPLE_RATE)
            piece = wave[start:start + 2000]
            peak = np.fft.rfftfreq(len(piece), 1 / SAMPLE_RATE)[np.abs(np.fft.rfft(piece)).argmax()]
            assert abs(peak - PITCHES[clip.pitch]) < 10


def test_records_media_and_answers_agree(av_data):
    root, stats = av_data
    records = [json.loads(line) for line in (root / "train.jsonl").read_text().splitlines()]
    assert {r["question_type"] for r in records} == {"temporal", "sound", "audiovisual"}
    checked = 0
    for record in records:
        question = record["question"]
        if not question.startswith("which way does the ") or " and " in record["text"]:
            continue  # one-shape clips: follow the shape's colour from the first to the second frame
        frames = read_video(root / record["video"], num_frames=NUM_FRAMES).astype(float)  # (T, S, S, 3)
        color = np.array(COLORS[question.split()[4]], dtype=float)
        centres = []
        for frame in frames[:3]:
            ys, xs = np.nonzero(np.abs(frame - color).sum(-1) < 90)
            centres.append((xs.mean(), ys.mean()))
        dx, dy = np.subtract(centres[2], centres[0])
        expected = DIRECTIONS[record["answer"]]
        assert np.sign(dx if expected[0] else dy) == (expected[0] or expected[1]), record
        checked += 1
    assert checked >= 3
    sound = read_audio(root / records[0]["audio"], sample_rate=SAMPLE_RATE)
    track = read_audio(root / records[0]["video"], sample_rate=SAMPLE_RATE, duration=sound.shape[1] / SAMPLE_RATE)
    assert np.corrcoef(sound[0], track[0])[0, 1] > 0.9  # the MP4's sound track is the WAV
    assert set(stats["baselines"]) == {"temporal", "sound", "audiovisual", "overall"}
