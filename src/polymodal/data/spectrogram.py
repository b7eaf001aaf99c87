"""Log-mel spectrograms on torch: STFT (Hann window) → power → triangular mel filterbank → log."""

from __future__ import annotations

import torch
from torch import nn


def hz_to_mel(hz: torch.Tensor | float) -> torch.Tensor:
    """HTK mel scale: 2595 · log10(1 + f / 700)."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(hz, dtype=torch.float64) / 700.0)


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(n_freqs: int, n_mels: int, sample_rate: int, f_min: float = 0.0,
                   f_max: float | None = None) -> torch.Tensor:
    """Triangular filters, equally spaced on the mel scale, over the `n_freqs` STFT bins.

    Filter m rises linearly from mel point m to m+1 and falls to m+2 (n_mels + 2 points from f_min to
    f_max), each with peak 1 (HTK style, no area normalisation).

    Returns:
        (n_freqs, n_mels) float32; spectrogram (…, F, T) → mel with fb.T @ spec.
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"expected 0 <= f_min < f_max <= sample_rate / 2, got f_min={f_min}, f_max={f_max}, "
                         f"sample_rate={sample_rate}")
    freqs = torch.linspace(0, sample_rate / 2, n_freqs, dtype=torch.float64)  # (F,) bin centres
    points = mel_to_hz(torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2, dtype=torch.float64))
    lower, centre, upper = points[:-2], points[1:-1], points[2:]  # (M,) each
    rising = (freqs[:, None] - lower) / (centre - lower)  # (F, M)
    falling = (upper - freqs[:, None]) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()


class LogMelSpectrogram(nn.Module):
    """Waveforms → log-mel spectrograms, batched.

    Args:
        sample_rate: Hz of the input.
        n_fft: FFT size; `n_fft // 2 + 1` frequency bins.
        hop_length: samples between frames.
        win_length: Hann window length (≤ n_fft; centred in the FFT frame).
        n_mels: mel bands.
        f_min, f_max: band edges in Hz (f_max None: sample_rate / 2).
        power: 2 for power, 1 for magnitude.
        eps: added before the log.
        center: pad by n_fft // 2 on both sides (reflect) so frame t is centred on sample t · hop.
    """

    def __init__(self, *, sample_rate: int = 16000, n_fft: int = 400, hop_length: int = 160,
                 win_length: int | None = None, n_mels: int = 64, f_min: float = 0.0, f_max: float | None = None,
                 power: float = 2.0, eps: float = 1e-6, center: bool = True) -> None:
        super().__init__()
        win_length = n_fft if win_length is None else win_length
        if not 0 < win_length <= n_fft:
            raise ValueError(f"win_length must be in 1..n_fft={n_fft}, got {win_length}")
        self.n_fft, self.hop_length, self.win_length = n_fft, hop_length, win_length
        self.power, self.eps, self.center = power, eps, center
        self.n_mels = n_mels
        self.register_buffer("window", torch.hann_window(win_length, periodic=True), persistent=False)
        self.register_buffer("filterbank", mel_filterbank(n_fft // 2 + 1, n_mels, sample_rate, f_min, f_max),
                             persistent=False)

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for `num_samples` input samples."""
        if self.center:
            return num_samples // self.hop_length + 1
        return 1 + (num_samples - self.n_fft) // self.hop_length

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """(…, S) float waveforms → (…, n_mels, frames) log-mel."""
        lead = wave.shape[:-1]
        flat = wave.reshape(-1, wave.shape[-1]).float()  # (N, S)
        spec = torch.stft(flat, self.n_fft, hop_length=self.hop_length, win_length=self.win_length,
                          window=self.window, center=self.center, pad_mode="reflect", return_complex=True)
        power = spec.abs().pow(self.power)  # (N, F, T)
        mel = torch.matmul(self.filterbank.T, power)  # (N, M, T)
        return torch.log(mel + self.eps).reshape(*lead, self.n_mels, mel.shape[-1])


def mel_centre_hz(n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None) -> torch.Tensor:
    """The centre frequency of each mel band (Hz), for plots and checks."""
    f_max = sample_rate / 2 if f_max is None else f_max
    points = mel_to_hz(torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2, dtype=torch.float64))
    return points[1:-1].float()


__all__ = ["LogMelSpectrogram", "hz_to_mel", "mel_centre_hz", "mel_filterbank", "mel_to_hz"]
