"""The encoder half of an image tokenizer: a convolutional encoder that downsamples an image 4× or 8× to a
grid of latent vectors, each quantised to one of a finite set of codes (docs/concepts.md#tokenizers).

The codes are what a language model reads and writes for an image (Chameleon, Emu3, LlamaGen, Janus); the
pixel decoder that turns codes back into an image is the `reconstruction` task's head. Quantisers come from
`vector-quantize-pytorch`: finite scalar quantisation (FSQ: each latent channel bounded and rounded to a
few levels, a straight-through gradient, no codebook to collapse) by default, or a VQ codebook updated by
exponential moving averages, with a commitment loss.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..base import EncoderOutput


QUANTIZERS = ("fsq", "vq")
NORMS = ("group", "channel")
PADDINGS = ("zeros", "replicate")


class ChannelNorm(nn.Module):
    """Layer norm over the channels at each pixel of (B, C, H, W): what a pixel's features become depends on
    that pixel alone (GroupNorm pools statistics over the whole image)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def norm_layer(kind: str, channels: int) -> nn.Module:
    """"group": GroupNorm of 8 groups (VQGAN's); "channel": `ChannelNorm`."""
    return nn.GroupNorm(8, channels) if kind == "group" else ChannelNorm(channels)


def conv3(c_in: int, c_out: int, padding: str) -> nn.Conv2d:
    """A 3×3 convolution keeping the size; `padding`: "zeros" or "replicate" (the border repeated)."""
    return nn.Conv2d(c_in, c_out, 3, padding=1, padding_mode=padding)


class ResBlock(nn.Module):
    """Norm, SiLU, 3×3 convolution, twice, with a residual (VQGAN's block)."""

    def __init__(self, channels: int, norm: str = "group", padding: str = "zeros"):
        super().__init__()
        self.body = nn.Sequential(norm_layer(norm, channels), nn.SiLU(), conv3(channels, channels, padding),
                                  norm_layer(norm, channels), nn.SiLU(), conv3(channels, channels, padding))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def make_quantizer(spec: dict[str, Any], dim: int | None = None) -> tuple[nn.Module, int, int]:
    """(quantizer, latent width, number of codes) from {type: fsq, levels: [...]} or {type: vq,
    codebook_size, dim, decay, commitment_weight}."""
    spec = dict(spec)
    kind = spec.pop("type", "fsq")
    if kind == "fsq":
        from vector_quantize_pytorch import FSQ

        levels = [int(v) for v in spec.pop("levels", (8, 5, 5, 5))]
        if spec:
            raise ValueError(f"quantizer: unknown key {sorted(spec)[0]!r} for fsq; allowed: levels")
        if not levels or min(levels) < 2:
            raise ValueError(f"quantizer.levels: expected levels of at least 2 per channel, got {levels}")
        return FSQ(levels=levels), len(levels), math.prod(levels)
    if kind == "vq":
        from vector_quantize_pytorch import VectorQuantize

        size, width = int(spec.pop("codebook_size", 1024)), int(spec.pop("dim", dim or 64))
        decay, commitment = float(spec.pop("decay", 0.99)), float(spec.pop("commitment_weight", 0.25))
        kmeans = bool(spec.pop("kmeans_init", True))  # the first batch's k-means centres start the codebook
        if spec:
            raise ValueError(f"quantizer: unknown key {sorted(spec)[0]!r} for vq; allowed: codebook_size, "
                             "commitment_weight, decay, dim, kmeans_init")
        if not 0 < decay < 1:
            raise ValueError(f"quantizer.decay: expected a number between 0 and 1, got {decay}")
        return VectorQuantize(dim=width, codebook_size=size, decay=decay, commitment_weight=commitment,
                              kmeans_init=kmeans), width, size
    raise ValueError(f"quantizer.type: expected one of {', '.join(QUANTIZERS)}, got {kind!r}")


class QuantizedImageEncoder(nn.Module):
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

    standalone = True  # a tokenizer of its own, never a video encoder's frame encoder
    loads_run = True  # `path: RUN` in its config: a trained tokenizer, frozen (builders.trained_tokenizer)

    def __init__(self, *, out_dim: int, image_size: int = 64, downsample: int = 8,
                 channels: list[int] | tuple[int, ...] = (64, 128, 128, 256), quantizer: dict[str, Any] | None = None,
                 norm: str = "group", padding: str = "zeros"):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm: expected one of {', '.join(NORMS)}, got {norm!r}")
        if padding not in PADDINGS:
            raise ValueError(f"padding: expected one of {', '.join(PADDINGS)}, got {padding!r}")
        self.norm, self.padding = norm, padding
        if downsample not in (2, 4, 8, 16):
            raise ValueError(f"downsample: expected 2, 4, 8 or 16, got {downsample}")
        if image_size % downsample:
            raise ValueError(f"image_size={image_size} is not a multiple of downsample={downsample}")
        stages = int(math.log2(downsample))
        widths = list(channels) if len(channels) > 1 else list(channels) * (stages + 1)
        if len(widths) != stages + 1:
            raise ValueError(f"channels: expected {stages + 1} widths (the stem and {stages} stages), got {list(channels)}")
        self.image_size, self.downsample = image_size, downsample
        self.grid = (image_size // downsample, image_size // downsample)
        self.num_tokens = self.grid[0] * self.grid[1]
        self.channels = widths
        self.quantizer, self.latent_dim, self.num_codes = make_quantizer(quantizer or {"type": "fsq"})
        layers: list[nn.Module] = [conv3(3, widths[0], padding)]
        for i in range(stages):
            layers += [ResBlock(widths[i], norm, padding),
                       nn.Conv2d(widths[i], widths[i + 1], 4, stride=2, padding=1, padding_mode=padding)]
        layers += [ResBlock(widths[-1], norm, padding), norm_layer(norm, widths[-1]), nn.SiLU(),
                   nn.Conv2d(widths[-1], self.latent_dim, 1)]
        self.net = nn.Sequential(*layers)
        self.proj = nn.Linear(self.latent_dim, out_dim)
        self.pixel_decoder: PixelDecoder | None = None  # a trained tokenizer's own (`freeze_with_decoder`)
        self.frozen = False

    def freeze_with_decoder(self, decoder: PixelDecoder) -> None:
        """Become a trained tokenizer that a language model writes and reads through: its pixel decoder
        kept beside it (saved with the model), every weight frozen, always in eval mode (a VQ codebook's
        EMA never moves)."""
        self.pixel_decoder = decoder
        self.requires_grad_(False)
        self.frozen = True
        self.train(False)

    def train(self, mode: bool = True) -> QuantizedImageEncoder:
        return super().train(mode and not self.frozen)

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, N) codes → (B, 3, S, S) images in [0, 1], through the trained tokenizer's pixel decoder."""
        if self.pixel_decoder is None:
            raise ValueError("this image tokenizer has no pixel decoder: load a trained one (path: RUN)")
        with torch.autocast(codes.device.type, enabled=False):
            return ((self.pixel_decoder(self.embed_codes(codes)).float() + 1) / 2).clamp(0, 1)

    def latents(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) → (B, N, latent_dim) before quantisation, in raster order."""
        if pixels.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"expected images of image_size={self.image_size}, got {tuple(pixels.shape)}")
        return self.net(pixels).flatten(2).transpose(1, 2)

    def quantize(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, N, d) → quantised (B, N, d), codes (B, N) long, the quantiser's own loss (a scalar)."""
        with torch.autocast(latents.device.type, enabled=False):  # rounding needs float32
            out = self.quantizer(latents.float())
        quantised, codes = out[0], out[1]
        aux = out[2].sum() if len(out) > 2 and isinstance(out[2], torch.Tensor) else latents.new_zeros(())
        return quantised, codes.long(), aux

    def embed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, N) codes → (B, N, D) the tokens they stand for."""
        if hasattr(self.quantizer, "indices_to_codes"):
            vectors = self.quantizer.indices_to_codes(codes)
        else:
            vectors = self.quantizer.get_output_from_indices(codes)
        return self.proj(vectors)

    def forward(self, pixels: torch.Tensor) -> EncoderOutput:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            quantised, codes, aux = self.quantize(self.latents(pixels))
        tokens = self.proj(quantised)  # (B, N, D)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return EncoderOutput(tokens=tokens, mask=mask, pooled=tokens.mean(1), codes=codes, aux_loss=aux)


class PixelDecoder(nn.Module):
    """A grid of token vectors (B, N, D) → an image (B, 3, S, S): the mirror of `QuantizedImageEncoder`."""

    def __init__(self, width: int, grid: tuple[int, int], channels: list[int], norm: str = "group",
                 padding: str = "zeros"):
        super().__init__()
        self.grid = grid
        widths = list(reversed(channels))
        layers: list[nn.Module] = [nn.Conv2d(width, widths[0], 1), ResBlock(widths[0], norm, padding)]
        for i in range(len(widths) - 1):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), conv3(widths[i], widths[i + 1], padding),
                       ResBlock(widths[i + 1], norm, padding)]
        layers += [norm_layer(norm, widths[-1]), nn.SiLU(), conv3(widths[-1], 3, padding)]
        self.net = nn.Sequential(*layers)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, n, width = tokens.shape
        if n != self.grid[0] * self.grid[1]:
            raise ValueError(f"expected {self.grid[0] * self.grid[1]} tokens (a {self.grid} grid), got {n}")
        return self.net(tokens.transpose(1, 2).reshape(batch, width, *self.grid))
