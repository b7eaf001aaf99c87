"""Audio preprocessing: decode (audio files or a video's audio track), resample, mono, crop or pad."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from polymodal.data.media import MediaCache, crop_or_pad, read_audio
from polymodal.modalities.video.processor import numpy_generator

GAIN_DB = 6.0  # training-time gain jitter, ± dB


class AudioProcessor:
    """Turns an audio (or video) file into a fixed-length mono waveform tensor (S,).

    Args:
        sample_rate: Hz after resampling.
        duration: seconds; S = round(duration · sample_rate). Longer audio is cropped (a random window
            in training, the start in evaluation), shorter audio is zero-padded.
        augment: with a generator, a random gain of up to ±6 dB.
        cache_mb: keep this many MiB of decoded, resampled sound in memory; 0 decodes every time.
    """

    def __init__(self, *, sample_rate: int = 16000, duration: float = 2.0, augment: bool = False,
                 cache_mb: int = 1024) -> None:
        if sample_rate < 1000 or duration <= 0:
            raise ValueError(f"expected sample_rate >= 1000 and duration > 0, got {sample_rate} and {duration}")
        self.sample_rate, self.duration, self.augment = sample_rate, duration, augment
        self.cache = MediaCache(cache_mb * 2**20)

    @property
    def num_samples(self) -> int:
        return int(round(self.duration * self.sample_rate))

    def __call__(self, path: str | Path, generator: torch.Generator | None = None) -> torch.Tensor:
        """(S,) float32."""
        (whole,) = self.cache.get(str(path), lambda: (read_audio(path, sample_rate=self.sample_rate),))
        wave = crop_or_pad(whole, self.num_samples, numpy_generator(generator if self.augment else None))
        x = torch.from_numpy(np.ascontiguousarray(wave[0]))  # (S,)
        if self.augment and generator is not None:
            gain_db = GAIN_DB * (2 * torch.rand((), generator=generator) - 1)
            x = x * (10.0 ** (gain_db / 20.0))
        return x
