"""The built-in spoken-digits set: espeak-ng speech, split by voice, cached, with transcripts that match."""

import json
import shutil
import wave

import numpy as np
import pytest

from polymodal.data.spoken_digits import (DIGITS, HELD_OUT_ACCENTS, SAMPLE_RATE, SpeechSettings, plan_split, speak,
                                          split_variants, synthesize_speech)
from polymodal.errors import PolymodalError

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed (.ci/run installs it: apt-get install espeak-ng)")
TINY = SpeechSettings(n_train=12, n_val=4, n_test=6, n_words=4, utterances_per_speaker=2)


def test_no_voice_variant_is_shared_between_splits():
    variants = split_variants(0)
    assert set(variants) == {"train", "val", "test"}
    sets = {s: set(v) for s, v in variants.items()}
    assert not sets["train"] & sets["test"] and not sets["train"] & sets["val"] and not sets["val"] & sets["test"]
    assert len(sets["test"]) >= 10 and len(sets["train"]) >= 50
    assert split_variants(0) == variants and split_variants(1) != variants


def test_two_accents_are_heard_only_in_test():
    variants = split_variants(0)
    accents = {split: {u.speaker.accent for u in plan_split(split, 400, (1, 4), variants[kind], 4,
                                                                np.random.default_rng(0))}
               for split, kind in (("train", "train"), ("val", "val"), ("test", "test"), ("words", "test"))}
    assert not accents["train"] & set(HELD_OUT_ACCENTS) and not accents["val"] & set(HELD_OUT_ACCENTS)
    assert set(HELD_OUT_ACCENTS) <= accents["test"] and set(HELD_OUT_ACCENTS) <= accents["words"]
    assert len(accents["train"]) == 6


def test_plans_draw_lengths_speakers_and_noise_from_the_seed():
    variants = split_variants(0)["test"]
    plan = plan_split("test", 40, (2, 4), variants, 4, np.random.default_rng(0))
    assert {len(u.words) for u in plan} == {2, 3, 4}
    assert len({u.speaker.name for u in plan}) == 10  # 40 utterances, 4 a speaker
    assert all(u.speaker.variant in variants and set(u.words) <= set(DIGITS) for u in plan)
    assert all(15 <= u.snr_db <= 40 and 0 < u.lead < 0.5 for u in plan)
    assert plan == plan_split("test", 40, (2, 4), variants, 4, np.random.default_rng(0))


@needs_espeak
def test_synthesised_set_has_transcribed_speech_in_unheard_voices_and_is_cached(tmp_path):
    out = synthesize_speech(tmp_path / "speech", TINY, workers=2, log=lambda _: None)
    splits = {s: [json.loads(line) for line in (out / f"{s}.jsonl").read_text().splitlines()]
              for s in ("train", "val", "test", "words")}
    assert [len(splits[s]) for s in ("train", "val", "test", "words")] == [12, 4, 6, 4]
    voices = {s: {r["variant"] for r in rows} for s, rows in splits.items()}
    assert not voices["train"] & (voices["test"] | voices["words"] | voices["val"])
    assert all(2 <= len(r["text"].split()) <= 4 for r in splits["test"])
    assert all(len(r["text"].split()) == 1 for r in splits["words"])
    for record in splits["train"] + splits["words"]:
        assert record["label"] == "".join(str(DIGITS.index(w)) for w in record["text"].split())
        with wave.open(str(out / record["audio"])) as file:
            assert file.getframerate() == SAMPLE_RATE and file.getnchannels() == 1
            samples = np.frombuffer(file.readframes(file.getnframes()), dtype="<i2") / 32768.0
        assert 0.3 < len(samples) / SAMPLE_RATE <= 3.0
        assert record["seconds"] == pytest.approx(len(samples) / SAMPLE_RATE, abs=1e-3)
        # speech is much louder than the noise floor of its leading silence
        lead = samples[: int(0.015 * SAMPLE_RATE)]
        assert np.sqrt(np.mean(samples ** 2)) > 3 * np.sqrt(np.mean(lead ** 2))
    stamp = (out / "speech.json").stat().st_mtime_ns
    first = (out / splits["train"][0]["audio"]).read_bytes()
    synthesize_speech(out, TINY, workers=2, log=lambda _: None)  # the same settings: nothing is redone
    assert (out / "speech.json").stat().st_mtime_ns == stamp
    assert (out / splits["train"][0]["audio"]).read_bytes() == first
    with pytest.raises(PolymodalError, match="made with"):
        synthesize_speech(out, SpeechSettings(n_train=13), workers=2, log=lambda _: None)
    assert not (out / "speech.partial.json").exists()


@needs_espeak
def test_an_interrupted_set_resumes_with_its_settings_and_refuses_others(tmp_path, monkeypatch):
    import polymodal.data.spoken_digits as module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "ProcessPoolExecutor", interrupted)
    with pytest.raises(KeyboardInterrupt):
        synthesize_speech(tmp_path / "s", TINY, workers=1, log=lambda _: None)
    monkeypatch.undo()
    with pytest.raises(PolymodalError, match="interrupted spoken-digits set with other settings"):
        synthesize_speech(tmp_path / "s", SpeechSettings(n_train=13), workers=1, log=lambda _: None)
    synthesize_speech(tmp_path / "s", TINY, workers=1, log=lambda _: None)
    assert (tmp_path / "s" / "speech.json").exists() and not (tmp_path / "s" / "speech.partial.json").exists()


@needs_espeak
def test_speak_is_deterministic_and_longer_for_more_words():
    plan = plan_split("train", 6, (1, 4), split_variants(0)["train"], 6, np.random.default_rng(1))
    from polymodal.data.spoken_digits import espeak_binary

    binary = espeak_binary()
    waves = [speak(u, binary) for u in plan]
    assert np.array_equal(waves[0], speak(plan[0], binary))
    fewest = min(range(6), key=lambda i: len(plan[i].words))
    most = max(range(6), key=lambda i: len(plan[i].words))
    assert len(plan[most].words) > len(plan[fewest].words)  # this seed's plan has both: the check below runs
    speech = lambda i: len(waves[i]) / SAMPLE_RATE - plan[i].lead  # noqa: E731
    assert speech(most) > speech(fewest)


def test_missing_espeak_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(PolymodalError, match="apt-get install espeak-ng"):
        synthesize_speech(tmp_path / "none", TINY, log=lambda _: None)
