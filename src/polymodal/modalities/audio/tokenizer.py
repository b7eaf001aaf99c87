"""The sound tokenizer (docs/concepts.md#tokenizers): a waveform's log-mel spectrogram, read as a sequence of
frames, is downsampled in time by a 1-D convolutional encoder, and each step quantised to one code (the
image tokenizer's quantiser and blocks, `modalities/quantizing.py`). Its decoder gives the log-mel back;
a Griffin-Lim vocoder turns that into a waveform.

The vocoder is the classic one, in torch: the mel power spread back over the STFT's bins by the
filterbank's pseudo-inverse (clamped at zero), then phases found by Griffin-Lim with momentum (Perraudin et
al. 2013). Where it falls short: the pseudo-inverse cannot restore the detail inside a wide high mel band
(harmonics there come back smeared), and phases found from magnitudes alone add a faint metallic
roughness; pitch, timbre and timing survive, which is what the built-in sounds need. A neural vocoder
(HiFi-GAN) would sound better and needs weights we cannot ship.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..quantizing import QuantizingEncoder, check_choices, conv_decoder, conv_encoder, stage_widths
from .features import LogMelSpectrogram

LOG_CENTRE, LOG_SCALE = -1.5, 10.0  # natural-log mel power → about [-1, 1] (floor 1e-5: -11.5)
MEL_FLOOR = 1e-5
CHUNK = 32  # sounds vocoded at once


class GriffinLim(nn.Module):
    """Log-mel spectrograms (B, M, T) → waveforms (B, S).

    Args:
        mel: the `LogMelSpectrogram` that made them (its FFT, hop, window and filterbank).
        num_samples: S, the waveform's length.
        iterations: Griffin-Lim's rounds.
        momentum: the fast variant's (0: plain Griffin-Lim).
        seed: the starting phases' generator seed (a vocoded sound is the same every time).
    """

    def __init__(self, mel: LogMelSpectrogram, num_samples: int, iterations: int = 32, momentum: float = 0.99,
                 seed: int = 0):
        super().__init__()
        if iterations < 1 or not 0 <= momentum < 1:
            raise ValueError(f"expected iterations >= 1 and momentum in [0, 1), got {iterations} and {momentum}")
        self.n_fft, self.hop, self.win = mel.n_fft, mel.hop_length, mel.win_length
        self.num_samples, self.iterations, self.momentum, self.seed = num_samples, iterations, momentum, seed
        self.register_buffer("window", mel.window.clone(), persistent=False)
        self.register_buffer("inverse", torch.linalg.pinv(mel.filterbank.T.double()).float(), persistent=False)  # (F, M)

    def magnitudes(self, log_mel: torch.Tensor) -> torch.Tensor:
        """(B, M, T) log-mel power → (B, F, T) STFT magnitudes (the pseudo-inverse, clamped at zero)."""
        power = (log_mel.float().exp() - MEL_FLOOR).clamp(min=0)
        return (self.inverse @ power).clamp(min=0).sqrt()

    def stft(self, wave: torch.Tensor) -> torch.Tensor:
        return torch.stft(wave, self.n_fft, hop_length=self.hop, win_length=self.win, window=self.window,
                          center=True, pad_mode="reflect", return_complex=True)

    def istft(self, spec: torch.Tensor) -> torch.Tensor:
        return torch.istft(spec, self.n_fft, hop_length=self.hop, win_length=self.win, window=self.window,
                           center=True, length=self.num_samples)

    def phases(self, magnitude: torch.Tensor) -> torch.Tensor:
        """Unit phases (B, F, T) that make `magnitude` a consistent spectrogram: Griffin-Lim's alternation
        between the magnitudes asked for and the nearest real signal's, with momentum."""
        generator = torch.Generator().manual_seed(self.seed)
        start = torch.exp(2j * torch.pi * torch.rand(magnitude.shape[-2:], generator=generator))  # every sound's
        angles = start.to(magnitude.device).expand(magnitude.shape)
        previous = torch.zeros_like(magnitude, dtype=angles.dtype)
        for _ in range(self.iterations):
            rebuilt = self.stft(self.istft(magnitude * angles))
            step = rebuilt - previous * (self.momentum / (1 + self.momentum))
            angles = step / step.abs().clamp(min=1e-16)
            previous = rebuilt
        return angles

    @torch.no_grad()
    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        """(B, M, T) → (B, S), CHUNK sounds at a time (large batches of FFTs run slower per sound on a CPU;
        every sound's phases start the same, so a sound does not depend on its batch)."""
        waves = []
        with torch.autocast(log_mel.device.type, enabled=False):
            for part in log_mel.split(CHUNK):
                magnitude = self.magnitudes(part)
                waves.append(self.istft(magnitude * self.phases(magnitude)).clamp(-1, 1))
        return torch.cat(waves) if waves else log_mel.new_zeros(0, self.num_samples)


class QuantizedAudioEncoder(QuantizingEncoder):
    """Waveform (B, S) → log-mel (M bands × T frames) → T/f codes and their vectors (a sound tokenizer's
    encoder). The frames are the sequence and the mel bands its channels, so each code stands for f
    frames' whole spectrum.

    Args:
        out_dim: D, the width of the tokens handed on.
        sample_rate: Hz; duration: seconds (the processor's crop or pad).
        n_fft, hop_length, n_mels: the log-mel's; T = samples // hop_length + 1 must divide by downsample.
        downsample: f, frames per code (2, 4, 8 or 16).
        channels: the widths of the stem and of each stage (1 + log2 f of them, or one for all).
        quantizer: {type: fsq, levels: [8, 5, 5, 5]} (1,000 codes) or {type: vq, ...}.
        norm, padding: as the image tokenizer's ("group" / "channel"; "zeros" / "replicate").
        vocoder_iterations: Griffin-Lim's rounds when codes become sound.
    """

    modality = "audio"

    def __init__(self, *, out_dim: int, sample_rate: int = 16000, duration: float = 0.504, n_fft: int = 512,
                 hop_length: int = 128, n_mels: int = 64, downsample: int = 4,
                 channels: list[int] | tuple[int, ...] = (96, 128, 192), quantizer: dict[str, Any] | None = None,
                 norm: str = "group", padding: str = "zeros", vocoder_iterations: int = 32):
        super().__init__()
        check_choices(norm, padding)
        self.norm, self.padding = norm, padding
        widths = stage_widths(channels, downsample)
        self.sample_rate, self.duration = sample_rate, duration
        self.num_samples = int(round(duration * sample_rate))
        self.mel = LogMelSpectrogram(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels,
                                     eps=MEL_FLOOR)
        self.frames = self.mel.num_frames(self.num_samples)
        if self.frames % downsample:
            raise ValueError(f"duration: {duration} s at {sample_rate} Hz gives {self.frames} frames of hop_length="
                             f"{hop_length}, not a multiple of downsample={downsample}; a duration of "
                             f"{(-(-self.frames // downsample) * downsample - 1) * hop_length / sample_rate:g} s fits")
        self.downsample, self.channels, self.n_mels = downsample, widths, n_mels
        self.num_tokens = self.frames // downsample
        self.grid = (self.num_tokens,)
        self._setup(quantizer, out_dim)
        self.net = conv_encoder(n_mels, widths, self.latent_dim, norm, padding, dims=1)
        self.vocoder = GriffinLim(self.mel, self.num_samples, iterations=vocoder_iterations)

    def reconstruction_target(self, waves: torch.Tensor) -> torch.Tensor:
        """(B, S) → (B, M, T) the normalised log-mel (about [-1, 1]) the decoder learns to give back."""
        if waves.shape[-1] != self.num_samples:
            raise ValueError(f"expected waveforms of {self.num_samples} samples (duration={self.duration} s at "
                             f"{self.sample_rate} Hz), got {tuple(waves.shape)}")
        with torch.autocast(waves.device.type, enabled=False):
            return (self.mel(waves.float()) - LOG_CENTRE) / LOG_SCALE

    def latents(self, waves: torch.Tensor) -> torch.Tensor:
        """(B, S) → (B, N, latent_dim) before quantisation, in time order."""
        return self.net(self.reconstruction_target(waves)).transpose(1, 2)

    def make_decoder(self, width: int) -> MelDecoder:
        return MelDecoder(width, self.num_tokens, self.channels, self.n_mels, self.norm, self.padding)

    def as_image(self, target: torch.Tensor) -> torch.Tensor:
        """A normalised log-mel (B, M, T) → (B, 1, M, T) in [0, 1], for PSNR and SSIM."""
        return ((target.float() + 1) / 2).clamp(0, 1)[:, None]

    def media_from(self, rebuilt: torch.Tensor) -> torch.Tensor:
        """The decoder's normalised log-mel (B, M, T) → (B, S) waveforms in [-1, 1], through the vocoder."""
        return self.vocoder(rebuilt.float() * LOG_SCALE + LOG_CENTRE)


class MelDecoder(nn.Module):
    """Token vectors (B, N, D) in time order → a normalised log-mel (B, M, T): `QuantizedAudioEncoder`'s mirror."""

    def __init__(self, width: int, length: int, channels: list[int], n_mels: int, norm: str = "group",
                 padding: str = "zeros"):
        super().__init__()
        self.length = length
        self.net = conv_decoder(width, channels, n_mels, norm, padding, dims=1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.shape[1] != self.length:
            raise ValueError(f"expected {self.length} tokens, got {tokens.shape[1]}")
        return self.net(tokens.transpose(1, 2))
