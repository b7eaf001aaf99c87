"""Video preprocessing: decode, sample frames, resize, normalise and (for training) augment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from polymodal.data.media import VIDEO_SAMPLING, MediaCache, decode_video, sample_frames
from polymodal.modalities.image.processor import JITTER


def numpy_generator(generator: torch.Generator | None) -> np.random.Generator | None:
    """A NumPy generator drawn from a torch one (None stays None), so one seed drives both."""
    if generator is None:
        return None
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))


class VideoProcessor:
    """Turns a video file into a normalised (T, 3, S, S) tensor.

    Args:
        image_size: S; frames are resized to S x S by FFmpeg's scaler while decoding.
        num_frames: T.
        fps: resample the clip to this rate before sampling (None: the file's own frames).
        sampling: `uniform` over the whole clip or a `segment` of consecutive frames (see `read_video`);
            training draws the frames at random, evaluation takes them deterministically.
        augment: with a generator, the same brightness/contrast jitter on every frame of the clip
            (no flips: "which way does it move?" must keep its answer).
        cache_mb: keep this many MiB of decoded clips (at S x S) in memory; 0 decodes every time.
    """

    def __init__(self, *, image_size: int = 32, num_frames: int = 8, fps: float | None = None,
                 sampling: str = "uniform", augment: bool = False, cache_mb: int = 1024) -> None:
        if sampling not in VIDEO_SAMPLING:
            raise ValueError(f"sampling: expected one of {', '.join(VIDEO_SAMPLING)}, got {sampling!r}")
        self.image_size, self.num_frames, self.fps, self.sampling = image_size, num_frames, fps, sampling
        self.augment = augment
        self.cache = MediaCache(cache_mb * 2**20)

    def __call__(self, path: str | Path, generator: torch.Generator | None = None) -> torch.Tensor:
        """(T, 3, S, S) float32 in [-1, 1]."""
        decoded, times = self.cache.get(str(path), lambda: decode_video(path, size=self.image_size))
        frames = sample_frames(decoded, times, num_frames=self.num_frames, fps=self.fps, sampling=self.sampling,
                               generator=numpy_generator(generator))
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0  # (T, 3, S, S) in [0, 1]
        if self.augment and generator is not None:
            brightness, contrast = (1 + JITTER * (2 * torch.rand(2, generator=generator) - 1)).tolist()
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = ((x - mean) * contrast + mean * brightness).clamp(0, 1)
        return x * 2.0 - 1.0
