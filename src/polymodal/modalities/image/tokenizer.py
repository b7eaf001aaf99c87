"""The image tokenizer (docs/concepts.md#tokenizers): a convolutional encoder that downsamples an image 4× or
8× to a grid of latent vectors, each quantised to one of a finite set of codes, and its pixel decoder.

The codes are what a language model reads and writes for an image (Chameleon, Emu3, LlamaGen, Janus); the
pixel decoder that turns codes back into an image is the `reconstruction` task's head. The quantiser and
the blocks are shared with the other modalities' tokenizers (`modalities/quantizing.py`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..quantizing import (NORMS, PADDINGS, QUANTIZERS, ChannelNorm, QuantizingEncoder, ResBlock, check_choices,
                          conv_decoder, conv_encoder, make_quantizer, stage_widths)

__all__ = ["NORMS", "PADDINGS", "QUANTIZERS", "ChannelNorm", "FrameDecoder", "PixelDecoder", "QuantizedImageEncoder",
           "QuantizedVideoEncoder", "ResBlock", "make_quantizer"]


class QuantizedImageEncoder(QuantizingEncoder):
    """Image (B, 3, S, S) → a (S/f)² grid of codes and their vectors (an image tokenizer's encoder).

    Args:
        out_dim: D, the width of the tokens handed on (a linear map of the quantised latents).
        image_size: S.
        downsample: f, 4 or 8 (log2 f stride-2 stages).
        channels: the widths of the stem and of each stage (1 + log2 f of them, or one for all).
        quantizer: {type: fsq, levels: [8, 5, 5, 5]} (1,000 codes) or {type: vq, codebook_size: 1024, ...}.
        norm: "group" (GroupNorm, VQGAN's: each code also depends on the whole image's statistics) or
            "channel" (per-pixel layer norm: a code depends on its neighbourhood only, so a flat background
            is one code wherever it is, which a language model then writes far more easily).
        padding: "zeros" or "replicate" (the border repeated: edge cells of a flat image code like inner ones).
    """

    modality = "image"

    def __init__(self, *, out_dim: int, image_size: int = 64, downsample: int = 8,
                 channels: list[int] | tuple[int, ...] = (64, 128, 128, 256), quantizer: dict[str, Any] | None = None,
                 norm: str = "group", padding: str = "zeros"):
        super().__init__()
        check_choices(norm, padding)
        self.norm, self.padding = norm, padding
        widths = stage_widths(channels, downsample)
        if image_size % downsample:
            raise ValueError(f"image_size={image_size} is not a multiple of downsample={downsample}")
        self.image_size, self.downsample = image_size, downsample
        self.grid = (image_size // downsample, image_size // downsample)
        self.num_tokens = self.grid[0] * self.grid[1]
        self.channels = widths
        self._setup(quantizer, out_dim)
        self.net = conv_encoder(3, widths, self.latent_dim, norm, padding, dims=2)

    def latents(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) → (B, N, latent_dim) before quantisation, in raster order."""
        if pixels.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"expected images of image_size={self.image_size}, got {tuple(pixels.shape)}")
        return self.net(pixels).flatten(2).transpose(1, 2)

    def reconstruction_target(self, pixels: torch.Tensor) -> torch.Tensor:
        """What the decoder learns to give back: the normalised pixels themselves, in [-1, 1]."""
        return pixels

    def make_decoder(self, width: int) -> PixelDecoder:
        return PixelDecoder(width, self.grid, self.channels, self.norm, self.padding)

    def as_image(self, target: torch.Tensor) -> torch.Tensor:
        """A reconstruction target (or the decoder's output) → (B, 3, S, S) in [0, 1], for PSNR and SSIM."""
        return ((target.float() + 1) / 2).clamp(0, 1)

    def media_from(self, rebuilt: torch.Tensor) -> torch.Tensor:
        """The pixel decoder's output → (B, 3, S, S) images in [0, 1]."""
        return self.as_image(rebuilt)


class PixelDecoder(nn.Module):
    """A grid of token vectors (B, N, D) → an image (B, 3, S, S): the mirror of `QuantizedImageEncoder`."""

    def __init__(self, width: int, grid: tuple[int, int], channels: list[int], norm: str = "group",
                 padding: str = "zeros"):
        super().__init__()
        self.grid = grid
        self.net = conv_decoder(width, channels, 3, norm, padding, dims=2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, n, width = tokens.shape
        if n != self.grid[0] * self.grid[1]:
            raise ValueError(f"expected {self.grid[0] * self.grid[1]} tokens (a {self.grid} grid), got {n}")
        return self.net(tokens.transpose(1, 2).reshape(batch, width, *self.grid))


class QuantizedVideoEncoder(QuantizedImageEncoder):
    """A clip (B, T, 3, S, S) → each frame's (S/f)² codes, frame after frame: T · (S/f)² codes (a video
    tokenizer's encoder by per-frame image tokens, Chameleon-style; the image tokenizer's layers, so its
    weights are an image tokenizer's).

    Args:
        num_frames: T, the frames of a clip (the processor samples them).
        the rest: as `QuantizedImageEncoder`'s.
    """

    modality = "video"

    def __init__(self, *, out_dim: int, image_size: int = 64, num_frames: int = 4, downsample: int = 8,
                 channels: list[int] | tuple[int, ...] = (64, 128, 128, 256), quantizer: dict[str, Any] | None = None,
                 norm: str = "group", padding: str = "zeros"):
        super().__init__(out_dim=out_dim, image_size=image_size, downsample=downsample, channels=channels,
                         quantizer=quantizer, norm=norm, padding=padding)
        if num_frames < 1:
            raise ValueError(f"num_frames: expected at least 1, got {num_frames}")
        self.num_frames = num_frames
        self.frame_tokens = self.num_tokens
        self.num_tokens = num_frames * self.frame_tokens

    def latents(self, clips: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, S, S) → (B, T · N, latent_dim): each frame's cells in raster order, frame by frame."""
        if clips.dim() != 5 or clips.shape[1] != self.num_frames:
            raise ValueError(f"expected clips of num_frames={self.num_frames} (B, T, 3, S, S), got {tuple(clips.shape)}")
        frames = super().latents(clips.flatten(0, 1))  # (B · T, N, d)
        return frames.reshape(clips.shape[0], self.num_tokens, -1)

    def make_decoder(self, width: int) -> FrameDecoder:
        return FrameDecoder(super().make_decoder(width), self.num_frames)

    def as_image(self, target: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, S, S) → (B, T · 3, S, S) in [0, 1]: a clip's frames as the channels of one image (PSNR
        over the whole clip; SSIM the mean over its frames' channels)."""
        return super().as_image(target).flatten(1, 2)

    def media_from(self, rebuilt: torch.Tensor) -> torch.Tensor:
        """The decoder's (B, T, 3, S, S) → clips in [0, 1], (B, T, 3, S, S)."""
        return super().as_image(rebuilt)


class FrameDecoder(nn.Module):
    """T · N token vectors → (B, T, 3, S, S): a `PixelDecoder` run on each frame's N tokens."""

    def __init__(self, frame: PixelDecoder, num_frames: int):
        super().__init__()
        self.frame, self.num_frames = frame, num_frames

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, n, width = tokens.shape
        if n % self.num_frames:
            raise ValueError(f"expected {self.num_frames} frames' tokens, got {n} tokens")
        frames = self.frame(tokens.reshape(batch * self.num_frames, n // self.num_frames, width))
        return frames.reshape(batch, self.num_frames, *frames.shape[1:])
