"""A speech encoder as ESPnet, NeMo and WeNet build them: log-mel with per-utterance normalisation,
SpecAugment in training, convolutional subsampling to 25-50 frames a second, then a conformer or a
transformer (`model.encoders.audio: {type: speech}`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from polymodal.layers import TransformerEncoder
from polymodal.layers.attention import MultiHeadAttention
from polymodal.layers.positions import SinusoidalPositions
from polymodal.modalities.audio.features import LogMelSpectrogram
from polymodal.modalities.base import EncoderOutput


def valid_samples(wave: torch.Tensor) -> torch.Tensor:
    """(B, S) waveforms zero-padded at the end → (B,) samples up to and including the last non-zero one
    (the processor pads a short utterance with exact zeros; a whole silent row counts as full length)."""
    nonzero = wave != 0
    last = nonzero.shape[1] - torch.flip(nonzero, dims=[1]).int().argmax(dim=1)
    return torch.where(nonzero.any(dim=1), last, torch.full_like(last, wave.shape[1]))


def normalise_per_utterance(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, M, T) log-mel and (B, T) bool valid frames → each band standardised over the utterance's valid
    frames (cepstral mean and variance normalisation per utterance); padded frames become 0."""
    weight = mask[:, None, :].to(features.dtype)
    count = weight.sum(dim=2, keepdim=True).clamp(min=1)
    mean = (features * weight).sum(dim=2, keepdim=True) / count
    var = (((features - mean) ** 2) * weight).sum(dim=2, keepdim=True) / count
    return (features - mean) / var.clamp(min=1e-6).sqrt() * weight


class SpecAugment(nn.Module):
    """SpecAugment's masks (Park et al. 2019), in training only: `freq_masks` bands of up to `freq_width`
    mel bins and `time_masks` spans of up to `time_width` of the utterance's frames (a fraction, as
    ESPnet's adaptive masks) set to 0, the normalised mean. No time warping (ESPnet and NeMo recipes mostly
    leave it out too).

    The draws come from `generator`, else torch's global generator, which the trainer seeds and saves in
    its checkpoints: a run masks the same way every time and a resumed run as an unbroken one.
    """

    def __init__(self, freq_masks: int = 2, freq_width: int = 8, time_masks: int = 2, time_width: float = 0.05):
        super().__init__()
        if min(freq_masks, freq_width, time_masks) < 0 or not 0 <= time_width < 1:
            raise ValueError(f"SpecAugment: expected masks and widths >= 0 and time_width in [0, 1), got "
                             f"freq {freq_masks}x{freq_width}, time {time_masks}x{time_width}")
        self.freq_masks, self.freq_width = freq_masks, freq_width
        self.time_masks, self.time_width = time_masks, time_width

    def masks(self, shape: tuple[int, int, int], lengths: torch.Tensor,
              generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, M, T) bool, True where the features are masked; spans lie inside each utterance's length."""
        batch, bands, frames = shape
        device = lengths.device
        masked = torch.zeros(shape, dtype=torch.bool, device=device)
        band = torch.arange(bands, device=device)
        frame = torch.arange(frames, device=device)
        for _ in range(self.freq_masks):
            width = torch.randint(0, self.freq_width + 1, (batch,), generator=generator).to(device)
            start = (torch.rand(batch, generator=generator).to(device) * (bands - width + 1)).long()
            masked |= ((band >= start[:, None]) & (band < (start + width)[:, None]))[:, :, None]
        for _ in range(self.time_masks):
            most = (lengths.float() * self.time_width).floor().long()
            width = (torch.rand(batch, generator=generator).to(device) * (most + 1)).long()
            start = (torch.rand(batch, generator=generator).to(device) * (lengths - width + 1).clamp(min=1)).long()
            masked |= ((frame >= start[:, None]) & (frame < (start + width)[:, None]))[:, None, :]
        return masked

    def forward(self, features: torch.Tensor, lengths: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        if not self.training:
            return features
        return features.masked_fill(self.masks(tuple(features.shape), lengths, generator), 0.0)


class ConvSubsampling(nn.Module):
    """Conv2d stages of kernel 3, stride 2 over (time, mel) with ReLU, each halving the frame rate, then a
    linear map of channels × remaining bands to `dim` (ESPnet's Conv2dSubsampling)."""

    def __init__(self, n_mels: int, dim: int, factor: int, channels: int):
        super().__init__()
        if factor not in (2, 4, 8):
            raise ValueError(f"subsampling: expected 2, 4 or 8, got {factor}")
        stages, layers, in_channels, bands = int(math.log2(factor)), [], 1, n_mels
        for _ in range(stages):
            layers += [nn.Conv2d(in_channels, channels, 3, stride=2, padding=1), nn.ReLU()]
            in_channels, bands = channels, (bands + 1) // 2
        self.convs = nn.Sequential(*layers)
        self.stages = stages
        self.proj = nn.Linear(channels * bands, dim)

    def frames(self, frames: torch.Tensor | int) -> torch.Tensor | int:
        """Output frames for `frames` input frames (each stage: ceil(n / 2))."""
        for _ in range(self.stages):
            frames = (frames + 1) // 2
        return frames

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, M, T) → (B, T', dim)."""
        x = self.convs(features.transpose(1, 2)[:, None])  # (B, C, T', M')
        return self.proj(x.permute(0, 2, 1, 3).flatten(2))


class ConformerBlock(nn.Module):
    """Conformer block (Gulati et al. 2020): half-step feed-forward, self-attention, convolution module,
    half-step feed-forward, final LayerNorm; every part pre-normed with a residual. The convolution module's
    norm is a LayerNorm over channels (as NeMo's `conv_norm_type: layer_norm`), so padding and batch
    composition never change an utterance's output."""

    def __init__(self, dim: int, num_heads: int, kernel_size: int = 15, ff_ratio: float = 4.0,
                 dropout: float = 0.1):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"conv_kernel: expected an odd kernel, got {kernel_size}")
        hidden = int(dim * ff_ratio)

        def feed_forward() -> nn.Sequential:
            # dropout on the output only: on the 4x wider hidden layer it cost a fifth of a CPU step
            return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, dim),
                                 nn.Dropout(dropout))

        self.ff1, self.ff2 = feed_forward(), feed_forward()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, num_heads, dropout=dropout)
        self.conv_norm = nn.LayerNorm(dim)
        self.pointwise_in = nn.Linear(dim, 2 * dim)
        self.depthwise = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.depthwise_norm = nn.LayerNorm(dim)
        self.pointwise_out = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)
        self.out_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, D) and (B, T) bool valid frames → (B, T, D)."""
        keep = mask[:, :, None].to(x.dtype)
        x = x + 0.5 * self.ff1(x)
        x = x + self.drop(self.attn(self.attn_norm(x), mask=mask))
        y = F.glu(self.pointwise_in(self.conv_norm(x)), dim=-1) * keep  # padding never leaks into the conv
        y = self.depthwise(y.transpose(1, 2)).transpose(1, 2)
        x = x + self.drop(self.pointwise_out(F.silu(self.depthwise_norm(y))))
        x = x + 0.5 * self.ff2(x)
        return self.out_norm(x)


class SpeechEncoder(nn.Module):
    """Speech: waveforms → log-mel (25 ms windows every 10 ms) standardised per utterance → SpecAugment
    (training) → convolutional subsampling (`subsampling` 4: 25 frames a second) → sinusoidal positions →
    conformer (or transformer) blocks. Each output frame is a token; the mask marks the frames of the
    utterance (the processor's zero padding is not speech); pooled is their mean.

    Args:
        out_dim: width D of the returned tokens (the builder gives the model's width).
        sample_rate, duration: the waveform the processor delivers.
        n_mels, n_fft, hop_length: log-mel parameters (defaults: 80 bands, 25 ms / 10 ms at 16 kHz).
        subsampling: 2, 4 or 8: frames per output token.
        conv_channels: channels of the subsampling convolutions.
        block: "conformer" or "transformer".
        depth, num_heads: blocks and attention heads.
        conv_kernel: the conformer's depthwise convolution width, in output frames.
        dropout: dropout inside the blocks.
        freq_masks, freq_width, time_masks, time_width: SpecAugment (see `SpecAugment`); 0 masks: none.
    """

    def __init__(self, *, out_dim: int, sample_rate: int = 16000, duration: float = 3.0, n_mels: int = 80,
                 n_fft: int = 400, hop_length: int = 160, subsampling: int = 4, conv_channels: int = 64,
                 block: str = "conformer", depth: int = 4, num_heads: int = 4, conv_kernel: int = 15,
                 dropout: float = 0.1, freq_masks: int = 2, freq_width: int = 8, time_masks: int = 2,
                 time_width: float = 0.05) -> None:
        super().__init__()
        if block not in ("conformer", "transformer"):
            raise ValueError(f"block: expected 'conformer' or 'transformer', got {block!r}")
        self.num_samples = int(round(sample_rate * duration))
        self.hop_length = hop_length
        self.mel = LogMelSpectrogram(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels)
        self.augment = SpecAugment(freq_masks, freq_width, time_masks, time_width)
        self.subsample = ConvSubsampling(n_mels, out_dim, subsampling, conv_channels)
        self.num_tokens = self.subsample.frames(self.mel.num_frames(self.num_samples))
        self.positions = SinusoidalPositions(out_dim, self.num_tokens)
        self.drop = nn.Dropout(dropout)
        self.block = block
        if block == "conformer":
            self.blocks = nn.ModuleList(ConformerBlock(out_dim, num_heads, conv_kernel, dropout=dropout)
                                        for _ in range(depth))
        else:
            self.encoder = TransformerEncoder(out_dim, depth, num_heads, dropout=dropout)

    def frame_lengths(self, wave: torch.Tensor) -> torch.Tensor:
        """(B,) log-mel frames that hold each utterance (centred frames: a frame per hop, plus one)."""
        return valid_samples(wave) // self.hop_length + 1

    def forward(self, wave: torch.Tensor) -> EncoderOutput:
        """(B, S) waveforms → tokens (B, T', D), mask (B, T') True on the utterance's frames."""
        if wave.ndim != 2 or wave.shape[1] != self.num_samples:
            raise ValueError(f"expected waveforms (B, {self.num_samples}) for this sample_rate and duration, "
                             f"got {tuple(wave.shape)}")
        features = self.mel(wave)  # (B, M, T)
        lengths = self.frame_lengths(wave).clamp(max=features.shape[2])
        frame_mask = torch.arange(features.shape[2], device=wave.device) < lengths[:, None]
        features = self.augment(normalise_per_utterance(features, frame_mask), lengths)
        tokens = self.drop(self.positions(self.subsample(features)))  # (B, T', D)
        out_lengths = self.subsample.frames(lengths).clamp(min=1)
        mask = torch.arange(tokens.shape[1], device=wave.device) < out_lengths[:, None]
        if self.block == "conformer":
            for block in self.blocks:
                tokens = block(tokens, mask)
        else:
            tokens = self.encoder(tokens, mask)
        keep = mask[:, :, None].to(tokens.dtype)
        pooled = (tokens * keep).sum(dim=1) / keep.sum(dim=1)
        times = (torch.arange(tokens.shape[1], device=wave.device) + 0.5) / tokens.shape[1]
        return EncoderOutput(tokens=tokens, mask=mask, pooled=pooled, times=times)
