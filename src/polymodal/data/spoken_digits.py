"""The built-in spoken-digits set: digit strings ("seven two nine") spoken by a real speech synthesiser,
espeak-ng, in voices split by speaker so that the test voices are never heard in training.

How it is made. A speaker is an espeak-ng accent (British, American, Scottish, Lancaster, RP, West
Midlands, Caribbean, New York) with a voice variant (espeak-ng's ~80 human-like variants: male, female,
Klatt-synthesiser voices, each with its own formants, breathiness and tone), a base pitch, a speaking
rate and a gap between words. The variants are dealt to the splits: no variant of a validation or test
speaker is heard in training, in any accent; and two accents (Scottish, Caribbean) are spoken only by
test speakers, so a quarter of the test voices also have an accent training never heard. Each utterance draws 1-4 digits (training, validation) or
2-4 (test; one digit in `words.jsonl`), jitters its speaker's pitch and rate a little, starts after a
random silence and gets background noise at a random signal-to-noise ratio; it is written as 16 kHz
16-bit WAV with its transcript in `text` ("seven two nine"), the digits in `label` ("729") and the
speaker in `speaker`.

What it lacks against recorded speech: espeak-ng is a formant synthesiser, so every voice is a
parametric one (no glottal irregularity, no real vocal tracts), each word is said the same way every
time by a given speaker (no coarticulation variety, no disfluencies, no emotion), there is no room
acoustics, no microphone and no real background (only added white and brown noise), and the vocabulary
is ten words. A model that transcribes it has learnt to hear digit words across very different
synthetic voices, not to transcribe people; test on recordings before trusting it on them.

Generation runs espeak-ng (Debian/Ubuntu: `apt-get install espeak-ng`) in parallel processes, ~10 ms an
utterance, and is cached: a folder already holding the same set (`speech.json` with the same settings)
is left as it is, and an interrupted run resumes (each file is written whole, then renamed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import wave
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import PolymodalError
from .manifest import write_manifest
from .media import read_audio

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ACCENTS = ("en-gb", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029",
           "en-us-nyc")
# espeak-ng's variants that sound like a person (robots, whispers, the "demonic" and "announcer" effects
# and the speed-test voice are left out)
VARIANTS = (
    "adam", "Alex", "Alicia", "Andrea", "Andy", "Annie", "antonio", "aunty", "belinda", "benjamin", "boris",
    "caleb", "david", "Denis", "Diogo", "ed", "edward", "edward2", "Gene", "Gene2", "gustave", "Henrique",
    "Hugo", "iven", "iven2", "iven3", "iven4", "Jacky", "john", "kaukovalta", "Lee", "linda", "marcelo",
    "Marco", "Mario", "max", "Michael", "michel", "miguel", "Mike", "Mr", "Nguyen", "pablo", "paul", "pedro",
    "quincy", "RicishayMax", "RicishayMax2", "RicishayMax3", "rob", "robert", "steph", "steph2", "steph3",
    "Storm", "Tweaky", "zac", "anika", "AnxiousAndy", "f1", "f2", "f3", "f4", "f5", "grandpa", "grandma",
    "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8",
    "norbert", "sandro", "shelby", "travis", "victor",
)
HELD_OUT_ACCENTS = ("en-gb-scotland", "en-029")  # only test speakers have these accents
SAMPLE_RATE = 16000
MAX_SECONDS = 3.0  # every utterance fits in this (the recipe's window)
SPLIT_VARIANTS = {"val": 0.1, "test": 0.2}  # shares of the variants only these splits' speakers use


@dataclass(frozen=True)
class SpeechSettings:
    """What a spoken-digits folder was made with (its cache key)."""

    n_train: int = 6000
    n_val: int = 300
    n_test: int = 500
    n_words: int = 300
    utterances_per_speaker: int = 12
    seed: int = 0
    version: int = 2

    @classmethod
    def scaled(cls, n_train: int, seed: int = 0) -> "SpeechSettings":
        """`n_train` training utterances; validation and single words a 20th of that, test a 12th (at least 8
        each): 6 000 → 300 / 500 / 300, the defaults."""
        if n_train < 1:
            raise PolymodalError(f"--n-speech: expected at least 1 training utterance, got {n_train}")
        return cls(n_train=n_train, n_val=max(8, n_train // 20), n_test=max(8, n_train // 12),
                   n_words=max(8, n_train // 20), seed=seed)


@dataclass(frozen=True)
class Speaker:
    name: str
    accent: str
    variant: str
    pitch: int  # espeak-ng -p, 0-99
    rate: int  # words a minute (-s)
    gap: int  # extra pause between words, in 10 ms (-g)


@dataclass(frozen=True)
class Utterance:
    id: str
    path: str  # relative to the split's folder
    words: tuple[str, ...]
    speaker: Speaker
    pitch: int
    rate: int
    lead: float  # seconds of silence before the speech
    snr_db: float
    noise_seed: int


def espeak_binary() -> str:
    """The espeak-ng program, or a clear error saying how to get it."""
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise PolymodalError("the spoken-digits set is made by espeak-ng, which is not installed: "
                             "`apt-get install espeak-ng` (Debian/Ubuntu), `brew install espeak-ng` (macOS)")
    return binary


def split_variants(seed: int) -> dict[str, tuple[str, ...]]:
    """The voice variants each split's speakers use; no two splits share one."""
    order = np.random.default_rng(seed).permutation(len(VARIANTS))
    n_val, n_test = (max(1, round(len(VARIANTS) * SPLIT_VARIANTS[s])) for s in ("val", "test"))
    pick = lambda idx: tuple(VARIANTS[i] for i in sorted(idx))  # noqa: E731
    return {"test": pick(order[:n_test]), "val": pick(order[n_test:n_test + n_val]),
            "train": pick(order[n_test + n_val:])}


def split_accents(split: str) -> tuple[str, ...]:
    """The accents a split's speakers have: test speakers (`test`, `words`) every one, the others all but
    `HELD_OUT_ACCENTS`."""
    return ACCENTS if split in ("test", "words") else tuple(a for a in ACCENTS if a not in HELD_OUT_ACCENTS)


def make_speakers(split: str, variants: tuple[str, ...], count: int, rng: np.random.Generator) -> list[Speaker]:
    """`count` speakers: every accent × variant pair once before any repeats, each with its own pitch and rate."""
    pairs = [(a, v) for v in variants for a in split_accents(split)]
    order = rng.permutation(len(pairs))
    speakers = []
    for k in range(count):
        accent, variant = pairs[order[k % len(pairs)]]
        speakers.append(Speaker(name=f"{split}-{k:04d}-{accent}+{variant}", accent=accent, variant=variant,
                                pitch=int(rng.integers(25, 76)), rate=int(rng.integers(135, 186)),
                                gap=int(rng.integers(0, 6))))
    return speakers


def plan_split(split: str, count: int, lengths: tuple[int, int], variants: tuple[str, ...], per_speaker: int,
               rng: np.random.Generator) -> list[Utterance]:
    """The utterances of one split: `count` digit strings of `lengths` (inclusive) words."""
    speakers = make_speakers(split, variants, max(1, -(-count // per_speaker)), rng)
    utterances = []
    for i in range(count):
        speaker = speakers[i % len(speakers)]
        words = tuple(DIGITS[d] for d in rng.integers(0, 10, size=int(rng.integers(lengths[0], lengths[1] + 1))))
        utterances.append(Utterance(
            id=f"{split}-{i:05d}", path=f"audio/{split}-{i:05d}.wav", words=words, speaker=speaker,
            pitch=int(np.clip(speaker.pitch + rng.integers(-5, 6), 0, 99)),
            rate=int(speaker.rate + rng.integers(-10, 11)), lead=float(rng.uniform(0.02, 0.4)),
            snr_db=float(rng.uniform(15.0, 40.0)), noise_seed=int(rng.integers(2**31))))
    return utterances


def speak(utterance: Utterance, binary: str) -> np.ndarray:
    """The utterance's waveform (S,) float32 at 16 kHz: espeak-ng's speech after a silence, with noise."""
    voice = f"{utterance.speaker.accent}+{utterance.speaker.variant}"
    text = " ".join(utterance.words)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "speech.wav"
        command = [binary, "-v", voice, "-s", str(utterance.rate), "-p", str(utterance.pitch),
                   "-g", str(utterance.speaker.gap), "-w", str(path), text]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if done.returncode != 0 or not path.exists():
            raise PolymodalError(f"espeak-ng failed on {' '.join(command)!r}: {done.stderr.strip()}")
        speech = read_audio(path, sample_rate=SAMPLE_RATE)[0]
    speech = _trim(speech)
    if len(speech) / SAMPLE_RATE + utterance.lead > MAX_SECONDS - 0.05 and utterance.rate < 400:
        return speak(replace(utterance, rate=utterance.rate + 40), binary)  # too slow to fit: faster
    rng = np.random.default_rng(utterance.noise_seed)
    lead = np.zeros(int(utterance.lead * SAMPLE_RATE), dtype=np.float32)
    wave_ = np.concatenate([lead, speech, np.zeros(int(0.05 * SAMPLE_RATE), dtype=np.float32)])
    peak = np.abs(wave_).max()
    wave_ = wave_ * (rng.uniform(0.3, 0.9) / max(peak, 1e-6))
    power = float(np.mean(speech ** 2) * (rng.uniform(0.3, 0.9) / max(peak, 1e-6)) ** 2)
    noise = _noise(len(wave_), rng) * np.sqrt(power / 10 ** (utterance.snr_db / 10))
    return np.clip(wave_ + noise, -1.0, 1.0).astype(np.float32)


def _trim(speech: np.ndarray, threshold: float = 1e-3) -> np.ndarray:
    """The speech without espeak-ng's leading and trailing silence."""
    loud = np.flatnonzero(np.abs(speech) > threshold)
    return speech[loud[0]: loud[-1] + 1] if loud.size else speech


def _noise(length: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-power noise: white, or brown (integrated white, a rumble), half the time each."""
    noise = rng.standard_normal(length)
    if rng.random() < 0.5:
        noise = np.cumsum(noise)
        noise -= np.linspace(noise[0], noise[-1], length)  # no drift
    return (noise / max(float(np.sqrt(np.mean(noise ** 2))), 1e-9)).astype(np.float32)


def _write_wav(path: Path, wave_: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = np.round(np.clip(wave_, -1.0, 1.0) * 32767).astype("<i2")
    partial = path.with_suffix(".part")
    with wave.open(str(partial), "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(SAMPLE_RATE)
        file.writeframes(pcm.tobytes())
    os.replace(partial, path)


def _render(job: tuple[Utterance, str, str]) -> float:
    utterance, folder, binary = job
    path = Path(folder) / utterance.path
    if not path.exists():
        _write_wav(path, speak(utterance, binary))
    with wave.open(str(path), "rb") as file:
        return file.getnframes() / SAMPLE_RATE


def _record(utterance: Utterance, seconds: float) -> dict[str, Any]:
    return {"id": utterance.id, "audio": utterance.path, "text": " ".join(utterance.words),
            "label": "".join(str(DIGITS.index(w)) for w in utterance.words), "speaker": utterance.speaker.name,
            "accent": utterance.speaker.accent, "variant": utterance.speaker.variant,
            "seconds": round(seconds, 3)}


def synthesize_speech(out: str | Path, settings: SpeechSettings = SpeechSettings(), *, workers: int | None = None,
                      log: Callable[[str], None] = print) -> Path:
    """Write the spoken-digits set under `out`: `train.jsonl`, `val.jsonl`, `test.jsonl`, `words.jsonl`,
    `audio/*.wav` and `speech.json` (the settings and each split's voices). A folder that already holds
    the same set is left as it is; one made with other settings is refused rather than mixed.

    Returns the folder."""
    out = Path(out)
    stamp = out / "speech.json"
    wanted = asdict(settings)
    if stamp.exists():
        made = json.loads(stamp.read_text(encoding="utf-8")).get("settings")
        if made == wanted:
            log(f"spoken digits: {out} already holds this set (speech.json); nothing to do")
            return out
        raise PolymodalError(f"{stamp}: this folder holds a spoken-digits set made with {made}, not {wanted}; "
                             "choose another --out or delete it")
    binary = espeak_binary()
    partial = out / "speech.partial.json"  # an interrupted run's settings: its finished files are reused
    if partial.exists() and json.loads(partial.read_text(encoding="utf-8")) != wanted:
        raise PolymodalError(f"{partial}: an interrupted spoken-digits set with other settings is here; choose "
                             "another --out or delete it")
    out.mkdir(parents=True, exist_ok=True)
    partial.write_text(json.dumps(wanted) + "\n", encoding="utf-8")
    variants = split_variants(settings.seed)
    rng = np.random.default_rng(settings.seed)
    per = settings.utterances_per_speaker
    plans = {"train": plan_split("train", settings.n_train, (1, 4), variants["train"], per, rng),
             "val": plan_split("val", settings.n_val, (1, 4), variants["val"], per, rng),
             "test": plan_split("test", settings.n_test, (2, 4), variants["test"], per, rng),
             "words": plan_split("words", settings.n_words, (1, 1), variants["test"], per, rng)}
    jobs = [(u, str(out), binary) for plan in plans.values() for u in plan]
    workers = workers or os.cpu_count() or 1
    log(f"spoken digits: {len(jobs)} utterances by espeak-ng on {workers} processes → {out}")
    with ProcessPoolExecutor(workers) as pool:
        seconds = list(pool.map(_render, jobs, chunksize=32))
    k = 0
    for split, plan in plans.items():
        write_manifest(out / f"{split}.jsonl", [_record(u, s) for u, s in zip(plan, seconds[k:k + len(plan)])])
        k += len(plan)
    summary = {"settings": wanted, "voices": {s: list(v) for s, v in variants.items()},
               "accents": {s: list(split_accents(s)) for s in plans}, "hours": round(sum(seconds) / 3600, 3)}
    stamp.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    partial.unlink()
    log(f"spoken digits: {sum(seconds) / 3600:.2f} h of speech written")
    return out
