"""The audio-visual benchmark: deterministic, physically consistent, answers derivable from the media."""

import json

import numpy as np
import pytest

from polymodal.data.media import read_audio, read_video
from polymodal.data.shapes import COLORS
from polymodal.data.shapes_av import (_HI, _LO, DIRECTIONS, DURATION, FPS, NUM_FRAMES, PITCHES, SAMPLE_RATE,
                                      SOUNDS, VOICES, Clip, all_questions, make_clip, make_question, render_frames, render_sound,
                                      synthesize_av)


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
            for t in np.linspace(0, DURATION, 33):
                x, y = m.at(t)
                assert _LO - 1e-9 <= x <= _HI + 1e-9 and _LO - 1e-9 <= y <= _HI + 1e-9
            if m.bounce is not None:
                x, y = m.at(m.bounce)
                assert min(abs(v - w) for v in (x, y) for w in (_LO, _HI)) < 1e-9
        assert clip.beeps[-1] + 0.08 <= DURATION  # the whole sound is inside the clip
        maker = clip.movers[clip.maker]
        assert clip.sound == VOICES[maker.color]  # the voice is the colour of the shape that makes it
        if clip.in_sync:
            assert clip.onset == maker.event
        else:  # out of sync: one bouncing shape, and the beep clearly apart from the bounce
            assert len(clip.movers) == 1 and abs(clip.onset - maker.bounce) >= 0.4
        if len(clip.movers) == 2 and maker.bounce is not None:  # "which shape": one colour, so one voice
            assert clip.movers[0].color == clip.movers[1].color and clip.movers[0].shape != clip.movers[1].shape
            assert abs(clip.movers[0].bounce - clip.movers[1].bounce) >= 0.6


def test_appearing_and_vanishing_shapes_are_drawn_only_while_shown():
    rng = np.random.default_rng(4)
    seen = set()
    for _ in range(100):
        clip = make_clip(rng)
        m = clip.movers[0]
        if m.appear is None and m.vanish is None:
            continue
        frames = render_frames(Clip((m,), 0, clip.pitch, clip.pulses, clip.onset), 32, (235, 235, 235))
        color = np.array(COLORS[m.color], dtype=float)
        present = [(np.abs(f.astype(float) - color).sum(-1) < 90).sum() > 10 for f in frames]
        assert present == [m.visible(i / FPS) for i in range(NUM_FRAMES)]
        assert any(present) and not all(present)
        seen.add("appear" if m.appear is not None else "vanish")
    assert seen == {"appear", "vanish"}


def test_sound_has_the_beeps_pitch_and_voice_it_claims():
    rng = np.random.default_rng(1)
    voices = set()
    for _ in range(60):
        clip = make_clip(rng)
        wave = render_sound(clip)
        loud = np.convolve(np.abs(wave) > 0.05, np.ones(80), mode="same") > 0  # (S,) sound present
        onsets = np.flatnonzero(np.diff(loud.astype(int)) == 1) / SAMPLE_RATE
        assert len(onsets) == clip.pulses
        np.testing.assert_allclose(onsets, clip.beeps, atol=0.01)
        voices.add(clip.sound)
        start = int(clip.beeps[0] * SAMPLE_RATE)
        piece = wave[start:start + 1280]
        peak = np.fft.rfftfreq(len(piece), 1 / SAMPLE_RATE)[np.abs(np.fft.rfft(piece)).argmax()]
        if clip.sound in ("whistle", "bell", "buzz", "horn"):  # the fundamental is the loudest partial
            assert abs(peak - PITCHES[clip.pitch]) < 20, clip
        else:  # the chirp sweeps from the pitch to an octave above
            assert PITCHES[clip.pitch] - 20 < peak < 2 * PITCHES[clip.pitch] + 20, clip
    assert voices == set(SOUNDS)


def test_the_asked_question_is_one_of_all_the_clip_answers():
    rng = np.random.default_rng(5)
    for _ in range(300):
        clip = make_clip(rng)
        everything = all_questions(clip)
        assert len({q for q, _, _ in everything}) == len(everything)  # no question twice
        assert make_question(clip, rng) in everything
        for question, _, _ in everything:  # motion is asked only about shapes on screen for a second or more
            if question.startswith(("which way does the", "does the")) and "appear" not in question:
                mover = next(m for m in clip.movers if f" {m.name} " in question)
                assert sum(mover.visible(i / FPS) for i in range(NUM_FRAMES)) >= 8, question


def test_sync_question_answers_are_balanced():
    rng = np.random.default_rng(2)
    answers = []
    for _ in range(3000):
        question, answer, _ = make_question(make_clip(rng), rng)
        if "in sync" in question:
            answers.append(answer)
    assert 0.4 < answers.count("yes") / len(answers) < 0.6


def test_records_media_and_answers_agree(av_data):
    root, stats = av_data
    records = [json.loads(line) for line in (root / "train.jsonl").read_text().splitlines()]
    assert {r["question_type"] for r in records} == {"temporal", "sound", "audiovisual"}
    for r in records:  # the other questions of the clip, not the asked one again
        assert r["more_questions"] and r["question"] not in {q["question"] for q in r["more_questions"]}
    checked = 0
    for record in records:
        question = record["question"]
        if not question.startswith("which way does the ") or " and " in record["text"]:
            continue  # one-shape clips: follow the shape's colour over its first frames
        frames = read_video(root / record["video"], num_frames=NUM_FRAMES).astype(float)  # (T, S, S, 3)
        color = np.array(COLORS[question.split()[4]], dtype=float)
        centres = []
        for frame in frames:  # the first three frames that show it (it may appear later)
            ys, xs = np.nonzero(np.abs(frame - color).sum(-1) < 90)
            if len(xs) > 10 and len(centres) < 3:
                centres.append((xs.mean(), ys.mean()))
        dx, dy = np.subtract(centres[2], centres[0])
        expected = DIRECTIONS[record["answer"]]
        assert np.sign(dx if expected[0] else dy) == (expected[0] or expected[1]), record
        checked += 1
    assert checked >= 3
    sound = read_audio(root / records[0]["audio"], sample_rate=SAMPLE_RATE)
    track = read_audio(root / records[0]["video"], sample_rate=SAMPLE_RATE, duration=sound.shape[1] / SAMPLE_RATE)
    assert np.corrcoef(sound[0], track[0])[0, 1] > 0.9  # the MP4's sound track is the WAV
    assert set(stats["baselines"]) == set(stats["question_only_baselines"]) == {"temporal", "sound", "audiovisual",
                                                                               "overall"}
    for kind, accuracy in stats["baselines"].items():  # knowing the question can only help a blind guess
        assert stats["question_only_baselines"][kind] >= accuracy - 0.05
