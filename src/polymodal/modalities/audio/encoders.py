"""Audio encoders: waveforms → log-mel on torch → a spectrogram patch transformer or a 1-D conv stack."""

from __future__ import annotations

import torch
from torch import nn

from polymodal.layers import TransformerEncoder
from polymodal.layers.positions import SinusoidalPositions, interval_centres
from polymodal.modalities.audio.features import LogMelSpectrogram
from polymodal.modalities.base import EncoderOutput
from polymodal.modalities.patches import PatchTransformerEncoder, patchify


class _LogMelFrontEnd(nn.Module):
    """(B, S) waveforms of a fixed length → (B, n_mels, frames) log-mel, standardised per example.

    Per-example standardisation (no running statistics) keeps a data-parallel run equal to one process
    and makes the encoder blind to overall loudness.
    """

    def __init__(self, sample_rate: int, duration: float, n_mels: int, n_fft: int, hop_length: int) -> None:
        super().__init__()
        self.num_samples = int(round(sample_rate * duration))
        self.mel = LogMelSpectrogram(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels)
        self.num_frames = self.mel.num_frames(self.num_samples)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if wave.ndim != 2 or wave.shape[1] != self.num_samples:
            raise ValueError(f"expected waveforms (B, {self.num_samples}) for this sample_rate and duration, "
                             f"got {tuple(wave.shape)}")
        mel = self.mel(wave)  # (B, M, T)
        mean = mel.mean(dim=(1, 2), keepdim=True)
        std = mel.std(dim=(1, 2), keepdim=True).clamp(min=1e-3)
        return (mel - mean) / std


class SpectrogramTransformer(PatchTransformerEncoder):
    """Audio spectrogram transformer: non-overlapping (freq x time) log-mel patches + CLS → transformer.

    Args:
        out_dim: width D of the returned tokens.
        sample_rate, duration: the waveform the processor delivers (S = sample_rate · duration samples).
        n_mels, n_fft, hop_length: log-mel parameters.
        patch_freq, patch_time: patch size in mel bands and frames (frames beyond a whole number of
            patches are dropped).
        width: the transformer's width (its tokens are projected to `out_dim` after).
        depth: the number of transformer blocks.
        num_heads: attention heads per block (must divide `width`).
        mlp_ratio: the MLP's hidden width, as a multiple of `width`.
        dropout: dropout on attention weights and MLP outputs.
    """

    def __init__(self, *, out_dim: int, sample_rate: int = 16000, duration: float = 2.0, n_mels: int = 64,
                 n_fft: int = 400, hop_length: int = 160, patch_freq: int = 16, patch_time: int = 16,
                 width: int = 128, depth: int = 2, num_heads: int = 4, mlp_ratio: float = 4.0,
                 dropout: float = 0.0) -> None:
        front = _LogMelFrontEnd(sample_rate, duration, n_mels, n_fft, hop_length)
        if n_mels % patch_freq or front.num_frames < patch_time:
            raise ValueError(f"n_mels={n_mels} must be a multiple of patch_freq={patch_freq} and the "
                             f"{front.num_frames} frames at least patch_time={patch_time}")
        grid = (n_mels // patch_freq, front.num_frames // patch_time)
        super().__init__(num_patches=grid[0] * grid[1], out_dim=out_dim, width=width, depth=depth,
                         num_heads=num_heads, mlp_ratio=mlp_ratio, dropout=dropout)
        self.front, self.grid = front, grid
        self.patch_dim = patch_freq * patch_time
        self.patch_embed = nn.Conv2d(1, width, kernel_size=(patch_freq, patch_time), stride=(patch_freq, patch_time))
        self.init_weights()

    def _patched_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, S) → (B, 1, M, frames): the standardised log-mel cut to a whole number of patches."""
        frames = self.grid[1] * self.patch_embed.kernel_size[1]
        return self.front(wave)[:, None, :, :frames]

    def patch_targets(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, S) → (B, patches, patch_freq · patch_time): each patch of the standardised log-mel
        spectrogram (frequency-major like the patch tokens)."""
        return patchify(self._patched_mel(wave), self.patch_embed.kernel_size)

    def forward(self, wave: torch.Tensor, token_mask: torch.Tensor | None = None) -> EncoderOutput:
        """(B, S) waveforms → tokens (B, 1 + patches, D) with CLS first; pooled = CLS. `token_mask`
        (B, patches) bool: patches replaced by the mask token (see `enable_token_masking`)."""
        mel = self._patched_mel(wave)  # (B, 1, M, frames)
        # patches are frequency-major: every time step of the lowest band first; the dropped frames are time too
        span = mel.shape[-1] / self.front.num_frames
        times = (interval_centres(self.grid[1], wave.device) * span).repeat(self.grid[0])
        return self.encode_patches(self.patch_embed(mel).flatten(2).transpose(1, 2), times, token_mask=token_mask)


class ConvAudioEncoder(nn.Module):
    """A 1-D convolutional front end over log-mel frames (mel bands as channels), then optional
    transformer layers; each output frame is a token, the pooled vector their mean.

    Args:
        out_dim: width D of the returned tokens.
        sample_rate, duration, n_mels, n_fft, hop_length: as for `SpectrogramTransformer`.
        channels: channels per conv stage; each stage halves the frame rate (kernel 3, stride 2).
        groups: GroupNorm groups (must divide every entry of `channels`).
        depth, num_heads: transformer layers over the conv frames (0: none).
    """

    def __init__(self, *, out_dim: int, sample_rate: int = 16000, duration: float = 2.0, n_mels: int = 64,
                 n_fft: int = 400, hop_length: int = 160, channels: tuple[int, ...] = (64, 128), groups: int = 8,
                 depth: int = 0, num_heads: int = 4) -> None:
        super().__init__()
        self.front = _LogMelFrontEnd(sample_rate, duration, n_mels, n_fft, hop_length)
        layers, in_channels = [], n_mels
        for out_channels in channels:
            if out_channels % groups:
                raise ValueError(f"groups={groups} does not divide channels={out_channels}")
            layers += [nn.Conv1d(in_channels, out_channels, 3, stride=2, padding=1),
                       nn.GroupNorm(groups, out_channels), nn.GELU()]
            in_channels = out_channels
        self.convs = nn.Sequential(*layers)
        frames = self.front.num_frames
        for _ in channels:
            frames = (frames + 1) // 2
        self.num_tokens = frames
        self.proj_in = nn.Linear(in_channels, out_dim)
        self.positions = SinusoidalPositions(out_dim, frames)
        self.encoder = TransformerEncoder(out_dim, depth, num_heads) if depth > 0 else None

    def forward(self, wave: torch.Tensor) -> EncoderOutput:
        """(B, S) waveforms → tokens (B, frames / 2^stages, D); pooled = mean."""
        features = self.convs(self.front(wave))  # (B, C, T')
        tokens = self.positions(self.proj_in(features.transpose(1, 2)))  # (B, T', D)
        if self.encoder is not None:
            tokens = self.encoder(tokens)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return EncoderOutput(tokens=tokens, mask=mask, pooled=tokens.mean(dim=1),
                             times=interval_centres(tokens.shape[1], tokens.device))
