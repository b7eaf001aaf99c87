"""The built-in audio-visual benchmark: short clips of moving shapes whose sounds have visible causes.

Each clip (2 s, 8 fps, an MP4 with H.264 video and an Opus sound track, plus the same sound as a WAV)
shows one or two small shapes moving left, right, up or down, slowly or fast. One shape makes a sound at
one moment: when it bounces off a wall, appears or vanishes. Every colour has its own voice (red whistles
= sine, green buzzes = square wave, blue honks = sawtooth, yellow rings = bell, purple chirps = rising
sweep); the pitch (low / high) and the number of short beeps (1-3) are drawn per clip and are not visible.
Questions need a particular modality:

- temporal ("which way does the red circle move?", "does it move fast or slow?", "does the red circle
  appear or disappear?"): only the pictures over time answer them;
- sound ("is the sound high or low?", "how many beeps are there?"): only the sound answers them;
- audio-visual ("is the sound in sync with the bounce?"; "which shape makes the sound?" when two shapes
  of one colour bounce at different times): only both together answer them.

So a clip's sound belongs to its pictures twice over: its voice is the colour of a shape on screen and it
starts with that shape's event (except in the deliberately out-of-sync clips of the sync question). That
is what audio-visual matching learns to check. Records carry `video`, `audio`, a caption of the pictures
(`text`), a caption of the sound (`sound`), a sound class (`label`, e.g. "high buzz"), and one question
with `answer` and `question_type`, plus every other question the clip answers (`more_questions`), which
a VQA task can draw from in training. Deterministic given the seed, like the image benchmark.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from polymodal.data.manifest import write_manifest
from polymodal.data.media import write_audio, write_video
from polymodal.data.shapes import COLORS, NUMBER_WORDS, SHAPES, SIZES, SPLITS, ShapeObject, _majority, render

FPS = 8
NUM_FRAMES = 16  # 2 s
DURATION = NUM_FRAMES / FPS
SAMPLE_RATE = 16000
DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
SPEEDS = {"slow": 0.18, "fast": 0.36}  # image widths per second
SIZE = SIZES["small"]  # small shapes only: room to move
VOICES = {"red": "whistle", "green": "buzz", "blue": "horn", "yellow": "bell", "purple": "chirp"}
SOUNDS = tuple(VOICES.values())
PITCHES = {"low": 330.0, "high": 880.0}
PULSE, GAP = 0.08, 0.07  # one beep and the silence after it, seconds
MAX_PULSES = 3
SOUND_LENGTH = MAX_PULSES * (PULSE + GAP)  # the longest sound: it must end inside the clip
IN_SYNC = 0.75  # share of one-bouncing-shape clips whose beep marks the bounce
AV_QUESTION_TYPES = ("temporal", "sound", "audiovisual")
SYNC_QUESTION = "is the sound in sync with the bounce?"
_LO, _HI = SIZE / 2 + 0.03, 1 - SIZE / 2 - 0.03  # centre limits: the shape stays inside the picture


@dataclass(frozen=True)
class Mover:
    """A shape with its start, direction, speed, and the times (s) it bounces, appears or vanishes, if it does."""

    shape: str
    color: str
    x: float
    y: float
    direction: str
    speed: str
    bounce: float | None = None
    appear: float | None = None
    vanish: float | None = None

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"

    @property
    def event(self) -> float | None:
        """When this shape does something a sound can mark."""
        return next((t for t in (self.bounce, self.appear, self.vanish) if t is not None), None)

    def at(self, t: float) -> tuple[float, float]:
        """Centre at time t: straight motion, reversed after the bounce."""
        dx, dy = DIRECTIONS[self.direction]
        v = SPEEDS[self.speed]
        forward = t if self.bounce is None else min(t, self.bounce)
        back = 0.0 if self.bounce is None else max(0.0, t - self.bounce)
        travelled = v * (forward - back)
        return self.x + dx * travelled, self.y + dy * travelled

    def visible(self, t: float) -> bool:
        return (self.appear is None or t >= self.appear) and (self.vanish is None or t < self.vanish)


@dataclass(frozen=True)
class Clip:
    """Movers and the one sound: `pulses` beeps of the maker's voice at `pitch`, starting at `onset` (s)."""

    movers: tuple[Mover, ...]
    maker: int  # index of the mover whose voice is heard
    pitch: str
    pulses: int
    onset: float

    @property
    def sound(self) -> str:
        return VOICES[self.movers[self.maker].color]

    @property
    def in_sync(self) -> bool:
        """Whether the sound starts with the maker's event."""
        return self.onset == self.movers[self.maker].event

    @property
    def beeps(self) -> tuple[float, ...]:
        return tuple(self.onset + k * (PULSE + GAP) for k in range(self.pulses))


def _mover(rng: np.random.Generator, shape: str, color: str, bounce: float | None = None, **shown: float) -> Mover:
    direction = str(rng.choice(list(DIRECTIONS)))
    speed = str(rng.choice(list(SPEEDS)))
    dx, dy = DIRECTIONS[direction]
    v = SPEEDS[speed]
    along = rng.uniform(_LO, _HI)  # the coordinate across the motion
    if bounce is None:  # start where the whole path stays inside
        start = rng.uniform(_LO, _HI - v * DURATION) if dx + dy > 0 else rng.uniform(_LO + v * DURATION, _HI)
    else:  # start so that the wall is reached at the bounce time
        start = _HI - v * bounce if dx + dy > 0 else _LO + v * bounce
    x, y = (start, along) if dx else (along, start)
    return Mover(shape, color, float(x), float(y), direction, speed, bounce, **shown)


def make_clip(rng: np.random.Generator) -> Clip:
    """Draw a clip; its kind (a third each): a shape appears or vanishes (one or two shapes on screen), one
    shape bounces (the beep in sync or, in a quarter of them, clearly not), or two shapes of one colour
    bounce at different times and the beep marks one of the bounces."""
    kind = int(rng.integers(0, 3))
    pitch, pulses = str(rng.choice(list(PITCHES))), 1 + int(rng.integers(0, MAX_PULSES))
    colors = [str(c) for c in rng.choice(list(COLORS), size=2, replace=False)]
    shapes = [str(s) for s in rng.choice(SHAPES, size=2, replace=False)]
    if kind == 0:
        when = float(rng.uniform(0.5, DURATION - SOUND_LENGTH))
        event = {"appear": when} if rng.random() < 0.5 else {"vanish": when}
        movers = (_mover(rng, shapes[0], colors[0], **event),)
        if rng.random() < 0.5:
            movers += (_mover(rng, shapes[1], colors[1]),)
        return Clip(movers, 0, pitch, pulses, when)
    if kind == 1:
        bounce = float(rng.uniform(0.5, DURATION - SOUND_LENGTH))
        movers = (_mover(rng, shapes[0], colors[0], bounce),)
        if rng.random() < IN_SYNC:
            return Clip(movers, 0, pitch, pulses, bounce)
        shift = float(rng.choice([-1, 1]) * rng.uniform(0.5, 0.8))
        onset = float(np.clip(bounce + shift, 0.05, DURATION - SOUND_LENGTH))
        if abs(onset - bounce) < 0.4:  # clipped too close to the bounce: move it to the other side
            onset = float(np.clip(bounce - np.sign(shift) * 0.6, 0.05, DURATION - SOUND_LENGTH))
        return Clip(movers, 0, pitch, pulses, onset)
    first = float(rng.uniform(0.3, 0.7))
    second = float(rng.uniform(first + 0.6, DURATION - SOUND_LENGTH))
    times = [first, second] if rng.random() < 0.5 else [second, first]
    movers = (_mover(rng, shapes[0], colors[0], times[0]), _mover(rng, shapes[1], colors[0], times[1]))
    maker = int(rng.integers(0, 2))
    return Clip(movers, maker, pitch, pulses, times[maker])


def render_frames(clip: Clip, image_size: int, background: tuple[int, int, int]) -> np.ndarray:
    """(NUM_FRAMES, S, S, 3) uint8."""
    frames = []
    for index in range(NUM_FRAMES):
        t = index / FPS
        scene = [ShapeObject(m.shape, m.color, "small", *m.at(t)) for m in clip.movers if m.visible(t)]
        frames.append(np.asarray(render(scene, image_size, background)))
    return np.stack(frames)


def voice(sound: str, frequency: float, t: np.ndarray) -> np.ndarray:
    """One beep of a voice at `frequency` Hz over times `t` (s), amplitude about 1."""
    phase = frequency * t
    if sound == "whistle":
        return np.sin(2 * np.pi * phase)
    if sound == "buzz":
        return np.sign(np.sin(2 * np.pi * phase)) * 0.6
    if sound == "horn":
        return (2 * (phase % 1.0) - 1) * 0.7
    if sound == "bell":  # an inharmonic partial, decaying
        return (np.sin(2 * np.pi * phase) + 0.6 * np.sin(2 * np.pi * 2.76 * phase)) * np.exp(-t / 0.04)
    if sound == "chirp":  # sweeps up an octave over the beep
        return np.sin(2 * np.pi * frequency * (t + t * t / (2 * PULSE)))
    raise ValueError(f"unknown sound {sound!r}; expected one of {', '.join(SOUNDS)}")


def render_sound(clip: Clip, seconds: float = DURATION) -> np.ndarray:
    """(S,) float32: the clip's beeps, with 10 ms fades (no clicks), over silence."""
    wave = np.zeros(int(seconds * SAMPLE_RATE), np.float32)
    t = np.arange(int(PULSE * SAMPLE_RATE)) / SAMPLE_RATE
    fade = np.minimum(1.0, np.minimum(t, PULSE - t) / 0.01)
    beep = (0.5 * voice(clip.sound, PITCHES[clip.pitch], t) * fade).astype(np.float32)
    for start in clip.beeps:
        i = int(round(start * SAMPLE_RATE))
        piece = beep[: len(wave) - i]
        wave[i:i + len(piece)] += piece
    return wave


def video_caption(clip: Clip) -> str:
    """E.g. "a red circle moving left fast, bouncing back and a blue square moving up slowly"."""
    parts = []
    for m in clip.movers:
        event = ", bouncing back" if m.bounce is not None else ", appearing" if m.appear is not None else (
            ", vanishing" if m.vanish is not None else "")
        parts.append(f"a {m.name} moving {m.direction} {'fast' if m.speed == 'fast' else 'slowly'}{event}")
    return " and ".join(parts)


def sound_caption(clip: Clip) -> str:
    """E.g. "two high buzz beeps"."""
    return f"{NUMBER_WORDS[clip.pulses]} {clip.pitch} {clip.sound} beep{'s' if clip.pulses > 1 else ''}"


def _seen_long(m: Mover) -> bool:
    """On screen for at least a second (8 frames): long enough to tell its direction and speed. A slow
    shape seen for half a second moves 2 px in a 32 px picture; such shapes are only asked whether they
    appear or disappear."""
    return sum(m.visible(i / FPS) for i in range(NUM_FRAMES)) >= FPS


def make_question(clip: Clip, rng: np.random.Generator) -> tuple[str, str, str]:
    """(question, answer, question_type), the type drawn evenly where the clip allows it.

    The sync question goes to every out-of-sync clip and to a third of the in-sync ones, so its answers are
    balanced (IN_SYNC = 3/4)."""
    bounces = sum(m.bounce is not None for m in clip.movers)
    if bounces == 1 and (not clip.in_sync or rng.random() < (1 - IN_SYNC) / IN_SYNC):
        return SYNC_QUESTION, "yes" if clip.in_sync else "no", "audiovisual"
    kinds = ["temporal", "sound"] + (["audiovisual"] if bounces == 2 else [])
    kind = str(rng.choice(kinds))
    if kind == "temporal":
        m = clip.movers[int(rng.integers(0, len(clip.movers)))]
        roll = rng.random()
        if m.event is not None and m.bounce is None and (roll < 0.4 or not _seen_long(m)):
            return f"does the {m.name} appear or disappear?", "appear" if m.appear is not None else "disappear", kind
        if roll > 0.7:
            return f"does the {m.name} move fast or slow?", m.speed, kind
        first = " first" if m.bounce is not None else ""  # a bouncing shape turns back: ask where it set off
        return f"which way does the {m.name} move{first}?", m.direction, kind
    if kind == "sound":
        if rng.random() < 0.5:
            return "is the sound high or low?", clip.pitch, kind
        return "how many beeps are there?", NUMBER_WORDS[clip.pulses], kind
    return "which shape makes the sound?", clip.movers[clip.maker].shape, kind


def all_questions(clip: Clip) -> list[tuple[str, str, str]]:
    """Every question the clip answers, (question, answer, question_type): the training records list the
    ones besides their own under `more_questions`, so a VQA task can ask several per clip (CLEVR-style)."""
    out = []
    for m in clip.movers:
        first = " first" if m.bounce is not None else ""
        if _seen_long(m):
            out.append((f"which way does the {m.name} move{first}?", m.direction, "temporal"))
            out.append((f"does the {m.name} move fast or slow?", m.speed, "temporal"))
        if m.event is not None and m.bounce is None:
            out.append((f"does the {m.name} appear or disappear?", "appear" if m.appear is not None else "disappear",
                        "temporal"))
    out.append(("is the sound high or low?", clip.pitch, "sound"))
    out.append(("how many beeps are there?", NUMBER_WORDS[clip.pulses], "sound"))
    bounces = sum(m.bounce is not None for m in clip.movers)
    if bounces == 1:
        out.append((SYNC_QUESTION, "yes" if clip.in_sync else "no", "audiovisual"))
    if bounces == 2:
        out.append(("which shape makes the sound?", clip.movers[clip.maker].shape, "audiovisual"))
    return out


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
            more = [{"question": q, "answer": a, "question_type": t} for q, a, t in all_questions(clip)
                    if q not in (question, SYNC_QUESTION)]  # the sync question only where asked: balanced
            records.append({
                "id": f"av-{split}-{index:06d}", "video": video_path, "audio": audio_path,
                "text": video_caption(clip), "sound": sound_caption(clip), "label": f"{clip.pitch} {clip.sound}",
                "question": question, "answer": answer, "question_type": question_type, "more_questions": more,
            })
            if (index + 1) % 500 == 0 and index + 1 < counts[split]:
                log(f"shapes-av: {split} {index + 1}/{counts[split]} clips")
        write_manifest(out / f"{split}.jsonl", records)
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
    by_question: dict[str, list[str]] = {}
    for r in train:
        by_question.setdefault(r["question"], []).append(r["answer"])
    prior = {q: _majority(answers) for q, answers in by_question.items()}
    blind = {}  # the stronger baseline: the most frequent train answer to the same question (no media)
    for kind in (*AV_QUESTION_TYPES, "overall"):
        hits = [r["answer"] == prior.get(r["question"], majority.get(r["question_type"]))
                for r in test if kind in ("overall", r["question_type"])]
        if hits:
            blind[kind] = sum(hits) / len(hits)
    label = _majority([r["label"] for r in train])
    return {
        "counts": {split: len(records) for split, records in records_by_split.items()},
        "question_types": {split: dict(sorted(Counter(r["question_type"] for r in records).items()))
                           for split, records in records_by_split.items()},
        "baselines": baselines,
        "majority_answers": majority,
        "question_only_baselines": blind,
        "label_baseline": {"label": label, "accuracy": sum(r["label"] == label for r in test) / max(1, len(test))},
    }


def format_av_baselines(stats: dict) -> str:
    lines = ["shapes-av: majority baselines on test (always give the most frequent train answer)"]
    blind = stats.get("question_only_baselines", {})
    for kind, accuracy in stats["baselines"].items():
        lines.append(f"  video qa {kind:<12} {accuracy:.3f}  ({stats['majority_answers'].get(kind, 'per type')}); "
                     f"per question {blind.get(kind, float('nan')):.3f}")
    lines.append(f"  sound label           {stats['label_baseline']['accuracy']:.3f}  ({stats['label_baseline']['label']})")
    return "\n".join(lines)


__all__ = ["AV_QUESTION_TYPES", "Clip", "Mover", "all_questions", "make_clip", "render_frames", "render_sound", "synthesize_av"]
