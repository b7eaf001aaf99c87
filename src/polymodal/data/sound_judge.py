"""A judge of generated sounds: a classifier trained on real sounds of the built-in benchmark names the
voice, the pitch and the number of beeps of a sound, so text-to-sound generation is scored the way the
shapes detector scores drawings.

It reads a sound's log-mel spectrogram twice: its spectral profile (the mean log-mel over the loudest
frames, relative to its peak: voice and pitch) and its loudness over time (each frame's log energy: the
beeps). A small network with three heads learns them from sounds rendered afresh (`render_beeps`, a fixed
seed of its own, every voice × pitch × count, the held-out pairs included: a judge knows every class), so
it is trained once per process, in a few seconds, and never from the data set it judges.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import nn

from .spectrogram import LogMelSpectrogram
from .shapes_av import PITCHES, SOUNDS
from .sound_generation import HOP, NUM_SAMPLES, SAMPLE_RATE, render_beeps

ATTRIBUTES = {"voice": list(SOUNDS), "pitch": list(PITCHES), "count": [1, 2, 3]}
PER_CLASS = 30  # training sounds per voice × pitch × count
LOUDEST = 8  # frames averaged for the spectral profile


class SoundJudge(nn.Module):
    """Waveforms (B, NUM_SAMPLES) at 16 kHz → logits per attribute (voice, pitch, count)."""

    def __init__(self, hidden: int = 128):
        super().__init__()
        self.mel = LogMelSpectrogram(sample_rate=SAMPLE_RATE, n_fft=512, hop_length=HOP, n_mels=64, eps=1e-5)
        frames = self.mel.num_frames(NUM_SAMPLES)
        self.body = nn.Sequential(nn.Linear(64 + frames, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU())
        self.heads = nn.ModuleDict({name: nn.Linear(hidden, len(classes)) for name, classes in ATTRIBUTES.items()})

    def features(self, waves: torch.Tensor) -> torch.Tensor:
        """(B, S) → (B, 64 + frames): the spectral profile and the loudness over time, each relative to its
        maximum (so loudness does not matter), scaled to about unit range."""
        if waves.shape[-1] != NUM_SAMPLES:  # longer sounds are cut, shorter padded with silence
            waves = torch.nn.functional.pad(waves, (0, max(0, NUM_SAMPLES - waves.shape[-1])))[..., :NUM_SAMPLES]
        mel = self.mel(waves.float())  # (B, 64, T)
        energy = torch.logsumexp(mel, dim=1)  # (B, T)
        loudest = energy.topk(LOUDEST, dim=1).indices  # (B, k)
        profile = mel.gather(2, loudest[:, None].expand(-1, mel.shape[1], -1)).mean(2)  # (B, 64)
        profile = profile - profile.amax(1, keepdim=True)
        envelope = energy - energy.amax(1, keepdim=True)
        return torch.cat([profile, envelope], 1) / 10

    def forward(self, waves: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = self.body(self.features(waves))
        return {name: head(hidden) for name, head in self.heads.items()}

    @torch.no_grad()
    def judge(self, waves: torch.Tensor | np.ndarray) -> list[dict[str, Any]]:
        """(B, S) waveforms → per sound {voice, pitch, count} as the judge hears them."""
        logits = self(torch.as_tensor(np.asarray(waves, dtype=np.float32)).reshape(-1, np.shape(waves)[-1]))
        picks = {name: out.argmax(1).tolist() for name, out in logits.items()}
        return [{name: ATTRIBUTES[name][picks[name][i]] for name in ATTRIBUTES} for i in range(len(picks["voice"]))]


def training_sounds(per_class: int = PER_CLASS, seed: int = 1234) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Rendered sounds of every voice × pitch × count (`per_class` each) and their labels."""
    rng = np.random.default_rng(seed)
    waves, labels = [], {name: [] for name in ATTRIBUTES}
    for _ in range(per_class):
        for name in SOUNDS:
            for pitch in PITCHES:
                for count in ATTRIBUTES["count"]:
                    spec = {"voice": name, "pitch": pitch, "count": count}
                    waves.append(render_beeps(spec, rng))
                    for key in ATTRIBUTES:
                        labels[key].append(ATTRIBUTES[key].index(spec[key]))
    return torch.from_numpy(np.stack(waves)), {k: torch.tensor(v) for k, v in labels.items()}


@lru_cache(maxsize=1)
def trained_judge(steps: int = 300, seed: int = 0) -> SoundJudge:
    """The judge, trained once per process (full-batch Adam on `training_sounds`), in eval mode."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        judge = SoundJudge()
        waves, labels = training_sounds()
        with torch.no_grad():
            features = judge.features(waves)
        optimiser = torch.optim.Adam(judge.parameters(), lr=3e-3)
        for _ in range(steps):
            hidden = judge.body(features)
            loss = sum(nn.functional.cross_entropy(judge.heads[k](hidden), labels[k]) for k in ATTRIBUTES)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return judge.eval().requires_grad_(False)


def sound_scores(specs: list[dict[str, Any]], heard: list[dict[str, Any]]) -> dict[str, float]:
    """The share of sounds whose voice, pitch and count the judge hears as asked (each), and all three."""
    n = max(1, len(specs))
    scores = {name: sum(h[name] == s[name] for s, h in zip(specs, heard)) / n for name in ATTRIBUTES}
    scores["all"] = sum(all(h[k] == s[k] for k in ATTRIBUTES) for s, h in zip(specs, heard)) / n
    return scores
