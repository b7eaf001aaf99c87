"""The built-in audio-visual benchmark: short clips of moving shapes with a sound track.

Each clip (2 s, 8 fps, an MP4 with H.264 video and an AAC sound track, plus the same sound as a WAV) shows
one or two shapes moving left, right, up or down, slowly or fast; a shape may bounce off a wall. The
sound is a few beeps of one kind (whistle = sine, buzz = square wave, horn = sawtooth) at one pitch
(low / high). Questions need a particular modality:

- temporal ("which way does the red circle move?", "does the red circle move fast or slow?"): only the
  pictures over time answer them;
- sound ("what kind of sound is it?", "is the sound high or low?", "how many beeps are there?"): only the
  sound answers them;
- audio-visual ("is the sound in sync with the bounce?", "which shape makes the sound?" when two shapes
  bounce at different times and the beep falls on one of them): only both together answer them.

Records carry `video`, `audio`, a caption of the pictures (`text`), a caption of the sound (`sound`),
a sound class (`label`, e.g. "high buzz"), and one question with `answer` and `question_type`.
Deterministic given the seed, like the image benchmark.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from polymodal.data.media import write_audio, write_video
from polymodal.data.shapes import COLORS, NUMBER_WORDS, SHAPES, SIZES, SPLITS, ShapeObject, _majority, render

FPS = 8
NUM_FRAMES = 16  # 2 s
SAMPLE_RATE = 16000
DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
SPEEDS = {"slow": 0.18, "fast": 0.36}  # image widths per second
SIZE = SIZES["small"]  # small shapes only: room to move
SOUNDS = ("whistle", "buzz", "horn")
PITCHES = {"low": 330.0, "high": 880.0}
BEEP = 0.15  # seconds
AV_QUESTION_TYPES = ("temporal", "sound", "audiovisual")
_LO, _HI = SIZE / 2 + 0.03, 1 - SIZE / 2 - 0.03  # centre limits: the shape stays inside the picture


@dataclass(frozen=True)
class Mover:
    """A shape with its start, direction, speed and (optional) bounce time in seconds."""

    shape: str
    color: str
    x: float
    y: float
    direction: str
    speed: str
    bounce: float | None

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    def at(self, t: float) -> tuple[float, float]:
        """Centre at time t: straight motion, reversed after the bounce."""
        dx, dy = DIRECTIONS[self.direction]
        v = SPEEDS[self.speed]
        forward = t if self.bounce is None else min(t, self.bounce)
        back = 0.0 if self.bounce is None else max(0.0, t - self.bounce)
        travelled = v * (forward - back)
        return self.x + dx * travelled, self.y + dy * travelled


@dataclass(frozen=True)
class Clip:
    movers: tuple[Mover, ...]
    sound: str
    pitch: str
    beeps: tuple[float, ...]  # beep start times, seconds
    maker: int | None  # index of the mover whose bounces the beeps mark, if any


def _mover(rng: np.random.Generator, shape: str, color: str, bounce: float | None) -> Mover:
    direction = str(rng.choice(list(DIRECTIONS)))
    speed = str(rng.choice(list(SPEEDS)))
    dx, dy = DIRECTIONS[direction]
    v, duration = SPEEDS[speed], NUM_FRAMES / FPS
    along = rng.uniform(_LO, _HI)  # the coordinate across the motion
    if bounce is None:  # start where the whole path stays inside
        start = rng.uniform(_LO, _HI - v * duration) if dx + dy > 0 else rng.uniform(_LO + v * duration, _HI)
    else:  # start so that the wall is reached at the bounce time
        start = _HI - v * bounce if dx + dy > 0 else _LO + v * bounce
    x, y = (start, along) if dx else (along, start)
    return Mover(shape, color, float(x), float(y), direction, speed, bounce)


def make_clip(rng: np.random.Generator) -> Clip:
    """Draw a clip; one in three has two shapes that bounce at different times, one making the sound."""
    duration = NUM_FRAMES / FPS
    kind = int(rng.integers(0, 3))  # 0: no bounce, 1: one shape bounces, 2: two shapes bounce
    pairs = rng.choice(len(COLORS) * len(SHAPES), size=2, replace=False)
    if kind == 2:  # distinct shapes, so "which shape makes the sound" has one answer
        shapes = rng.choice(len(SHAPES), size=2, replace=False)
        pairs = [int(shapes[i]) + len(SHAPES) * int(rng.integers(0, len(COLORS))) for i in range(2)]
    names = [(SHAPES[int(p) % len(SHAPES)], list(COLORS)[int(p) // len(SHAPES)]) for p in pairs]
    sound, pitch = str(rng.choice(SOUNDS)), str(rng.choice(list(PITCHES)))
    if kind == 0:
        count = 1 + int(rng.integers(0, 3))
        movers = (_mover(rng, *names[0], None),) + ((_mover(rng, *names[1], None),) if rng.random() < 0.5 else ())
        beeps = tuple(sorted(float(t) for t in rng.uniform(0.1, duration - 0.9, size=count)))
        return Clip(movers, sound, pitch, _spread(beeps), None)
    if kind == 1:
        bounce = float(rng.uniform(0.5, duration - 0.5))
        movers = (_mover(rng, *names[0], bounce),)
        in_sync = rng.random() < 0.5
        shift = rng.choice([-1, 1]) * rng.uniform(0.5, 0.8)
        beep = bounce if in_sync else float(np.clip(bounce + shift, 0.05, duration - 0.3))
        if not in_sync and abs(beep - bounce) < 0.4:  # clipped too close to the bounce: move it across
            beep = float(np.clip(bounce - np.sign(shift) * 0.6, 0.05, duration - 0.3))
        return Clip(movers, sound, pitch, (beep,), 0 if in_sync else None)
    first = float(rng.uniform(0.4, 0.8))
    second = float(rng.uniform(first + 0.6, duration - 0.3))
    times = [first, second] if rng.random() < 0.5 else [second, first]
    movers = (_mover(rng, *names[0], times[0]), _mover(rng, *names[1], times[1]))
    maker = int(rng.integers(0, 2))
    return Clip(movers, sound, pitch, (times[maker],), maker)


def _spread(beeps: tuple[float, ...]) -> tuple[float, ...]:
    """Keep beeps at least 0.3 s apart, so each is heard as one."""
    out: list[float] = []
    for t in beeps:
        out.append(max(t, out[-1] + 0.3) if out else t)
    return tuple(out)


def render_frames(clip: Clip, image_size: int, background: tuple[int, int, int]) -> np.ndarray:
    """(NUM_FRAMES, S, S, 3) uint8."""
    frames = []
    for index in range(NUM_FRAMES):
        t = index / FPS
        scene = [ShapeObject(m.shape, m.color, "small", *m.at(t)) for m in clip.movers]
        frames.append(np.asarray(render(scene, image_size, background)))
    return np.stack(frames)


def render_sound(clip: Clip, seconds: float = NUM_FRAMES / FPS) -> np.ndarray:
    """(S,) float32: beeps of the clip's kind and pitch, with short fades, over silence."""
    wave = np.zeros(int(seconds * SAMPLE_RATE), np.float32)
    n = int(BEEP * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    phase = PITCHES[clip.pitch] * t
    tone = {
        "whistle": np.sin(2 * np.pi * phase),
        "buzz": np.sign(np.sin(2 * np.pi * phase)) * 0.6,
        "horn": (2 * (phase % 1.0) - 1) * 0.7,
    }[clip.sound]
    fade = np.minimum(1.0, np.minimum(t, BEEP - t) / 0.01)  # 10 ms ramps: no clicks
    for start in clip.beeps:
        i = int(start * SAMPLE_RATE)
        piece = (0.5 * tone * fade)[: len(wave) - i]
        wave[i:i + len(piece)] += piece.astype(np.float32)
    return wave


def video_caption(clip: Clip) -> str:
    """E.g. "a red circle moving left fast and a blue square moving up slowly"."""
    parts = [f"a {m.name} moving {m.direction} {'fast' if m.speed == 'fast' else 'slowly'}" for m in clip.movers]
    return " and ".join(parts)


def sound_caption(clip: Clip) -> str:
    """E.g. "two high buzz beeps"."""
    count = len(clip.beeps)
    return f"{NUMBER_WORDS[count]} {clip.pitch} {clip.sound} beep{'s' if count > 1 else ''}"


def make_question(clip: Clip, rng: np.random.Generator) -> tuple[str, str, str]:
    """(question, answer, question_type), the type drawn evenly where the clip allows it."""
    kinds = ["temporal", "sound"] + (["audiovisual"] if any(m.bounce is not None for m in clip.movers) else [])
    kind = str(rng.choice(kinds))
    if kind == "temporal":
        m = clip.movers[int(rng.integers(0, len(clip.movers)))]
        if rng.random() < 0.3:
            return f"does the {m.name} move fast or slow?", m.speed, kind
        first = " first" if m.bounce is not None else ""  # a bouncing shape turns back: ask where it set off
        return f"which way does the {m.name} move{first}?", m.direction, kind
    if kind == "sound":
        roll = rng.random() * (3 if clip.maker is None and not any(m.bounce for m in clip.movers) else 2)
        if roll < 1:
            return "what kind of sound is it?", clip.sound, kind
        if roll < 2:
            return "is the sound high or low?", clip.pitch, kind
        return "how many beeps are there?", NUMBER_WORDS[len(clip.beeps)], kind  # only where beeps vary
    if len(clip.movers) == 2:
        return "which shape makes the sound?", clip.movers[clip.maker].shape, kind
    return "is the sound in sync with the bounce?", "yes" if clip.maker is not None else "no", kind


def synthesize_av(out_dir: str | Path, *, n_train: int = 3000, n_val: int = 300, n_test: int = 300, seed: int = 0,
                  image_size: int = 32, log: Callable[[str], Any] = print) -> dict:
    """Write `av/{train,val,test}.jsonl`, `av/clips/{split}/*.mp4` + `*.wav` and `av/stats.json` under `out_dir`.

    Returns:
        The statistics: per-split counts and question types, and test-split majority baselines per
        question type, overall, and for the sound `label`.
    """
    out = Path(out_dir) / "av"
    counts = {"train": n_train, "val": n_val, "test": n_test}
    records_by_split: dict[str, list[dict]] = {}
    for split_index, split in enumerate(SPLITS):
        rng = np.random.default_rng((seed, 100 + split_index))
        records = []
        for index in range(counts[split]):
            clip = make_clip(rng)
            background = tuple(int(v) for v in 235 + rng.integers(-12, 13, size=3))
            frames = render_frames(clip, image_size, background)
            sound = render_sound(clip)
            video_path = f"clips/{split}/{index:06d}.mp4"
            audio_path = f"clips/{split}/{index:06d}.wav"
            write_video(out / video_path, frames, fps=FPS, audio=sound, sample_rate=SAMPLE_RATE)
            write_audio(out / audio_path, sound, SAMPLE_RATE)
            question, answer, question_type = make_question(clip, rng)
            records.append({
                "id": f"av-{split}-{index:06d}", "video": video_path, "audio": audio_path,
                "text": video_caption(clip), "sound": sound_caption(clip), "label": f"{clip.pitch} {clip.sound}",
                "question": question, "answer": answer, "question_type": question_type,
            })
            if (index + 1) % 500 == 0 and index + 1 < counts[split]:
                log(f"shapes-av: {split} {index + 1}/{counts[split]} clips")
        with open(out / f"{split}.jsonl", "w", encoding="utf-8") as file:
            file.writelines(json.dumps(record) + "\n" for record in records)
        log(f"shapes-av: wrote {len(records)} {split} records to {out / f'{split}.jsonl'}")
        records_by_split[split] = records
    stats = _statistics(records_by_split)
    (out / "stats.json").write_text(json.dumps(stats, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    log(format_av_baselines(stats))
    return stats


def _statistics(records_by_split: dict[str, list[dict]]) -> dict:
    train, test = records_by_split["train"], records_by_split["test"]
    baselines, majority = {}, {}
    for kind in AV_QUESTION_TYPES:
        guess = _majority([r["answer"] for r in train if r["question_type"] == kind])
        answers = [r["answer"] for r in test if r["question_type"] == kind]
        if guess is not None and answers:
            baselines[kind] = sum(a == guess for a in answers) / len(answers)
            majority[kind] = guess
    per_type = [r["answer"] == majority.get(r["question_type"]) for r in test]
    baselines["overall"] = sum(per_type) / len(per_type) if per_type else 0.0
    label = _majority([r["label"] for r in train])
    return {
        "counts": {split: len(records) for split, records in records_by_split.items()},
        "question_types": {split: dict(sorted(Counter(r["question_type"] for r in records).items()))
                           for split, records in records_by_split.items()},
        "baselines": baselines,
        "majority_answers": majority,
        "label_baseline": {"label": label, "accuracy": sum(r["label"] == label for r in test) / max(1, len(test))},
    }


def format_av_baselines(stats: dict) -> str:
    lines = ["shapes-av: majority baselines on test (always give the most frequent train answer)"]
    for kind, accuracy in stats["baselines"].items():
        lines.append(f"  video qa {kind:<12} {accuracy:.3f}  ({stats['majority_answers'].get(kind, 'per type')})")
    lines.append(f"  sound label           {stats['label_baseline']['accuracy']:.3f}  ({stats['label_baseline']['label']})")
    return "\n".join(lines)


__all__ = ["AV_QUESTION_TYPES", "Clip", "Mover", "make_clip", "render_frames", "render_sound", "synthesize_av"]
