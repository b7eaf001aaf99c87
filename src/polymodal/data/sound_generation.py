"""Prompts to make sounds from, for text-to-sound generation on the built-in benchmark: "two high buzzes",
"a low whistle", each with a sound that matches it and what a judge checks (`data/sound_judge.py`).

A sound is one to three short beeps (80 ms, 70 ms apart) of one of the audio-visual benchmark's five voices
(`shapes_av.voice`: whistle, buzz, horn, bell, chirp) at a low or high pitch, in half a second (8,064
samples at 16 kHz: exactly 64 frames of a 128-sample hop). Each sound varies where no prompt says: its
onset (20–60 ms), loudness (0.35–0.6), a detune of up to ±2% and a faint noise floor, so that a model
learns the voices and not 24 recordings.

A held-out split measures composition: two voice × pitch pairs (high buzz, low bell) are never heard in
training (nor named in a training prompt); held-out prompts ask for them, at any count.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .media import write_audio
from .prompted import write_prompted_splits
from .shapes_av import GAP, PITCHES, PULSE, SOUNDS, voice

SAMPLE_RATE = 16000
HOP = 128  # the audio tokenizer's hop: NUM_SAMPLES gives 64 frames with a centred STFT
NUM_SAMPLES = 63 * HOP
DURATION = NUM_SAMPLES / SAMPLE_RATE  # 0.504 s
COUNTS = {1: "a", 2: "two", 3: "three"}
PLURALS = {"whistle": "whistles", "buzz": "buzzes", "horn": "horns", "bell": "bells", "chirp": "chirps"}
HELD_OUT_SOUNDS = frozenset({("buzz", "high"), ("bell", "low")})
ONSET = (0.02, 0.06)  # seconds
LOUDNESS = (0.35, 0.6)
DETUNE = 0.02
NOISE = 0.003


def sound_prompt(spec: dict[str, Any]) -> str:
    """{voice, pitch, count} → e.g. "two high buzzes", "a low whistle"."""
    count, name = spec["count"], spec["voice"]
    return f"{COUNTS[count]} {spec['pitch']} {PLURALS[name] if count > 1 else name}"


def render_beeps(spec: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """(NUM_SAMPLES,) float32: `count` beeps of the voice at the pitch, varied by `rng` (onset, loudness,
    detune, noise floor), with 10 ms fades."""
    onset, loudness = rng.uniform(*ONSET), rng.uniform(*LOUDNESS)
    frequency = PITCHES[spec["pitch"]] * (1 + rng.uniform(-DETUNE, DETUNE))
    t = np.arange(int(PULSE * SAMPLE_RATE)) / SAMPLE_RATE
    fade = np.minimum(1.0, np.minimum(t, PULSE - t) / 0.01)
    beep = loudness * voice(spec["voice"], frequency, t) * fade
    wave = NOISE * rng.standard_normal(NUM_SAMPLES)
    for k in range(spec["count"]):
        start = int(round((onset + k * (PULSE + GAP)) * SAMPLE_RATE))
        wave[start:start + len(beep)] += beep[: NUM_SAMPLES - start]
    return np.clip(wave, -1, 1).astype(np.float32)


def draw_spec(rng: np.random.Generator, *, held_out: bool = False) -> dict[str, Any]:
    """A voice, pitch and count: a pair heard in training, or (held out) one never heard there."""
    pairs = [(v, p) for v in SOUNDS for p in PITCHES if ((v, p) in HELD_OUT_SOUNDS) == held_out]
    name, pitch = pairs[int(rng.integers(0, len(pairs)))]
    return {"voice": name, "pitch": pitch, "count": int(rng.integers(1, 4))}


def synthesize_sound_generation(out_dir: str | Path, *, n_train: int = 2000, n_val: int = 150, n_test: int = 300,
                                n_heldout: int = 150, seed: int = 0,
                                log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Write `sound-{train,val,test,heldout}.jsonl` and `sounds/{split}/*.wav` under `out_dir`.

    Each record: `id`, `audio`, `text` (the prompt, which the sound satisfies), `category` ("sound") and
    `spec` {voice, pitch, count}. Returns the statistics also written to `sound-stats.json`."""
    counts = {"train": n_train, "val": n_val, "test": n_test, "heldout": n_heldout}
    stats: dict[str, Any] = {"benchmark": "sounds-generation", "seed": seed, "sample_rate": SAMPLE_RATE,
                             "held_out_sounds": sorted(f"{p} {v}" for v, p in HELD_OUT_SOUNDS)}
    return write_prompted_splits(
        Path(out_dir), counts, name="sound", seed=seed, salt=11, field="audio", suffix=".wav", category="sound",
        draw=lambda rng, held_out: draw_spec(rng, held_out=held_out), prompt=sound_prompt,
        write=lambda path, spec, rng: write_audio(path, render_beeps(spec, rng), SAMPLE_RATE), tally="voice",
        stats=stats, log=log)
