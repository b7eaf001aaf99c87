"""Spoken words for `configs/audio-classification.yaml`: sounds this project did not design.

Ten command words ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", as in Speech
Commands) spoken by the espeak-ng speech synthesiser (`apt-get install espeak-ng`) in many voices, at
random speed and pitch, placed at a random time in a clip of random length (0.8 to 3 s, so the recipe
crops or pads), at random loudness (±12 dB), under white, pink or babble-like noise at 0 to 20 dB SNR.
The test split is spoken by voices that the training split never hears (speaker-independent).

    python examples/spoken_words.py --out D [--per-word 200] [--seed 0]
    polymodal train configs/audio-classification.yaml --set data.train=D/train.jsonl \
        data.val=D/val.jsonl data.test=D/test.jsonl --out RUN
    polymodal eval RUN --data D/test.jsonl --json
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
RATE = 16000
# espeak-ng voice + variant; the last four are held out for the test split
VOICES = [f"{v}+{x}" for v in ("en", "en-us", "en-gb-scotland", "en-029")
          for x in ("m1", "m2", "m3", "f1", "f2", "f3", "klatt", "croak", "whisper")]
TEST_VOICES = ["en-gb-x-rp+m4", "en-us+f4", "en-gb-x-gbclan+m7", "en-us-nyc+f5"]


def speak(word: str, voice: str, speed: int, pitch: int, folder: Path) -> np.ndarray:
    """espeak-ng's rendering of `word`, as float32 mono at RATE."""
    path = folder / "w.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(path), word],
                   check=True, capture_output=True)
    with wave.open(str(path)) as f:
        rate, raw = f.getframerate(), f.readframes(f.getnframes())
    audio = np.frombuffer(raw, dtype=np.int16).astype(np.float32) / 32768
    nonzero = np.flatnonzero(np.abs(audio) > 1e-3)
    audio = audio[nonzero[0]:nonzero[-1] + 1] if nonzero.size else audio
    times = np.arange(int(len(audio) * RATE / rate)) * rate / RATE
    return np.interp(times, np.arange(len(audio)), audio).astype(np.float32)


def noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(n).astype(np.float32)
    if kind == "white":
        return white
    spectrum = np.fft.rfft(white)
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    if kind == "pink":
        spectrum /= np.sqrt(np.maximum(freqs, 20.0))
    else:  # babble-like: speech-band noise with a slow syllable-rate envelope
        spectrum *= (freqs > 200) & (freqs < 3500)
    shaped = np.fft.irfft(spectrum, n).astype(np.float32)
    if kind == "babble":
        shaped *= 0.5 + np.abs(np.sin(2 * np.pi * rng.uniform(3, 6) * np.arange(n) / RATE + rng.uniform(0, 6)))
    return shaped / (shaped.std() + 1e-8)


def clip(word: str, voice: str, rng: np.random.Generator, folder: Path) -> np.ndarray:
    speech = speak(word, voice, int(rng.integers(110, 230)), int(rng.integers(20, 80)), folder)
    length = max(int(rng.uniform(0.8, 3.0) * RATE), len(speech) + RATE // 20)
    out = np.zeros(length, dtype=np.float32)
    start = int(rng.integers(0, length - len(speech) + 1))
    out[start:start + len(speech)] = speech
    snr_db = rng.uniform(0, 20)
    power = np.mean(speech ** 2) + 1e-8
    out += noise(str(rng.choice(["white", "pink", "babble"])), length, rng) * np.sqrt(power / 10 ** (snr_db / 10))
    out *= 10 ** (rng.uniform(-12, 12) / 20) * 0.3 / (np.abs(out).max() + 1e-8)
    return np.clip(out, -1, 1)


def write_wav(path: Path, audio: np.ndarray) -> None:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(RATE)
        f.writeframes((audio * 32767).astype(np.int16).tobytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--per-word", type=int, default=200, help="training clips per word (val: a tenth, test: a fifth)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng not found: apt-get install espeak-ng")
    out = Path(args.out)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    splits = {"train": (VOICES, args.per_word), "val": (VOICES, max(1, args.per_word // 10)),
              "test": (TEST_VOICES, max(1, args.per_word // 5))}
    with tempfile.TemporaryDirectory() as tmp:
        for split, (voices, per_word) in splits.items():
            records = []
            for word in WORDS:
                for i in range(per_word):
                    voice = voices[int(rng.integers(len(voices)))]
                    path = out / "audio" / f"{split}_{word}_{i:04d}.wav"
                    write_wav(path, clip(word, voice, rng, Path(tmp)))
                    records.append({"id": path.stem, "audio": f"audio/{path.name}", "label": word, "voice": voice})
            rng.shuffle(records)
            (out / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
            print(f"{split}: {len(records)} clips, {len(set(r['voice'] for r in records))} voices")


if __name__ == "__main__":
    main()
