"""What every modality tokenizer shares (docs/concepts.md#tokenizers): the quantiser, the convolutional blocks
of its encoder and decoder (over images in 2-D, over spectrograms in time in 1-D), and the life of a
trained tokenizer, frozen beside its own decoder, that a language model reads and writes through.

Quantisers come from `vector-quantize-pytorch`: finite scalar quantisation (FSQ: each latent channel
bounded and rounded to a few levels, a straight-through gradient, no codebook to collapse) by default, or a
VQ codebook updated by exponential moving averages, with a commitment loss.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .base import EncoderOutput

QUANTIZERS = ("fsq", "vq")
NORMS = ("group", "channel")
PADDINGS = ("zeros", "replicate")


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


def check_choices(norm: str, padding: str) -> None:
    if norm not in NORMS:
        raise ValueError(f"norm: expected one of {', '.join(NORMS)}, got {norm!r}")
    if padding not in PADDINGS:
        raise ValueError(f"padding: expected one of {', '.join(PADDINGS)}, got {padding!r}")


class ChannelNorm(nn.Module):
    """Layer norm over the channels at each place of (B, C, ...): what a pixel's (or a frame's) features
    become depends on that place alone (GroupNorm pools statistics over the whole input)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.movedim(1, -1)).movedim(-1, 1)


def norm_layer(kind: str, channels: int) -> nn.Module:
    """"group": GroupNorm of 8 groups (VQGAN's); "channel": `ChannelNorm`."""
    return nn.GroupNorm(8, channels) if kind == "group" else ChannelNorm(channels)


def conv3(c_in: int, c_out: int, padding: str, dims: int = 2) -> nn.Module:
    """A size-keeping convolution of kernel 3 in `dims` (1 or 2) dimensions; `padding`: "zeros" or
    "replicate" (the border repeated)."""
    conv = nn.Conv2d if dims == 2 else nn.Conv1d
    return conv(c_in, c_out, 3, padding=1, padding_mode=padding)


def downsample2(c_in: int, c_out: int, padding: str, dims: int = 2) -> nn.Module:
    """A stride-2 convolution (kernel 4) halving each of `dims` sizes."""
    conv = nn.Conv2d if dims == 2 else nn.Conv1d
    return conv(c_in, c_out, 4, stride=2, padding=1, padding_mode=padding)


def pointwise(c_in: int, c_out: int, dims: int = 2) -> nn.Module:
    return (nn.Conv2d if dims == 2 else nn.Conv1d)(c_in, c_out, 1)


class ResBlock(nn.Module):
    """Norm, SiLU, kernel-3 convolution, twice, with a residual (VQGAN's block), in 1 or 2 dimensions."""

    def __init__(self, channels: int, norm: str = "group", padding: str = "zeros", dims: int = 2):
        super().__init__()
        self.body = nn.Sequential(norm_layer(norm, channels), nn.SiLU(), conv3(channels, channels, padding, dims),
                                  norm_layer(norm, channels), nn.SiLU(), conv3(channels, channels, padding, dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def conv_encoder(c_in: int, widths: list[int], latent_dim: int, norm: str, padding: str, dims: int) -> nn.Sequential:
    """A stem, then per stage a residual block and a halving, then a block, norm, SiLU and a pointwise map
    to `latent_dim` (len(widths) - 1 halvings)."""
    layers: list[nn.Module] = [conv3(c_in, widths[0], padding, dims)]
    for i in range(len(widths) - 1):
        layers += [ResBlock(widths[i], norm, padding, dims), downsample2(widths[i], widths[i + 1], padding, dims)]
    layers += [ResBlock(widths[-1], norm, padding, dims), norm_layer(norm, widths[-1]), nn.SiLU(),
               pointwise(widths[-1], latent_dim, dims)]
    return nn.Sequential(*layers)


def conv_decoder(width: int, widths: list[int], c_out: int, norm: str, padding: str, dims: int) -> nn.Sequential:
    """The mirror of `conv_encoder`: tokens of `width` → `c_out` channels at the input's size (nearest
    upsampling and a convolution per stage; `widths` as the encoder's, in the encoder's order)."""
    widths = list(reversed(widths))
    layers: list[nn.Module] = [pointwise(width, widths[0], dims), ResBlock(widths[0], norm, padding, dims)]
    for i in range(len(widths) - 1):
        layers += [nn.Upsample(scale_factor=2, mode="nearest"), conv3(widths[i], widths[i + 1], padding, dims),
                   ResBlock(widths[i + 1], norm, padding, dims)]
    layers += [norm_layer(norm, widths[-1]), nn.SiLU(), conv3(widths[-1], c_out, padding, dims)]
    return nn.Sequential(*layers)


def stage_widths(channels: list[int] | tuple[int, ...], downsample: int) -> list[int]:
    """The stem's and each stage's width for a `downsample` of 2, 4, 8 or 16 (one width: all the same)."""
    if downsample not in (2, 4, 8, 16):
        raise ValueError(f"downsample: expected 2, 4, 8 or 16, got {downsample}")
    stages = int(math.log2(downsample))
    widths = list(channels) if len(channels) > 1 else list(channels) * (stages + 1)
    if len(widths) != stages + 1:
        raise ValueError(f"channels: expected {stages + 1} widths (the stem and {stages} stages), got {list(channels)}")
    return widths


class QuantizingEncoder(nn.Module):
    """A modality tokenizer's encoder: media → latents (`latents`, per modality) → codes and their tokens.

    Trained by the `reconstruction` task, whose decoder (`make_decoder`) turns tokens back into the
    reconstruction target (`reconstruction_target`); once trained it is frozen with that decoder
    (`freeze_with_decoder`) and `decode_codes` turns a language model's codes into media.
    A subclass sets `quantizer`, `latent_dim`, `num_codes`, `num_tokens`, `proj` and defines `latents`,
    `reconstruction_target`, `make_decoder`, `as_image` and `media_from`."""

    standalone = True  # a tokenizer of its own, never a video encoder's frame encoder
    loads_run = True  # `path: RUN` in its config: a trained tokenizer, frozen (builders.trained_tokenizer)
    modality = ""

    def _setup(self, quantizer: dict[str, Any] | None, out_dim: int) -> None:
        self.quantizer, self.latent_dim, self.num_codes = make_quantizer(quantizer or {"type": "fsq"})
        self.proj = nn.Linear(self.latent_dim, out_dim)
        self.pixel_decoder: nn.Module | None = None  # a trained tokenizer's own (`freeze_with_decoder`)
        self.frozen = False

    def freeze_with_decoder(self, decoder: nn.Module) -> None:
        """Become a trained tokenizer that a language model writes and reads through: its decoder kept
        beside it (saved with the model), every weight frozen, always in eval mode (a VQ codebook's EMA
        never moves)."""
        self.pixel_decoder = decoder
        self.requires_grad_(False)
        self.frozen = True
        self.train(False)

    def train(self, mode: bool = True) -> QuantizingEncoder:
        return super().train(mode and not self.frozen)

    def decoded(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, N) codes → the trained decoder's reconstruction target, in float32."""
        if self.pixel_decoder is None:
            raise ValueError(f"this {self.modality} tokenizer has no decoder: load a trained one (path: RUN)")
        with torch.autocast(codes.device.type, enabled=False):
            return self.pixel_decoder(self.embed_codes(codes)).float()

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, N) codes → media through the trained decoder (`media_from`)."""
        return self.media_from(self.decoded(codes))

    def media_from(self, rebuilt: torch.Tensor) -> torch.Tensor:  # pragma: no cover - each modality's own
        """The decoder's output → media (images in [0, 1], waveforms)."""
        raise NotImplementedError

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

    def latents(self, data: torch.Tensor) -> torch.Tensor:  # pragma: no cover - each modality's own
        raise NotImplementedError

    def forward(self, data: torch.Tensor) -> EncoderOutput:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            quantised, codes, aux = self.quantize(self.latents(data))
        tokens = self.proj(quantised)  # (B, N, D)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return EncoderOutput(tokens=tokens, mask=mask, pooled=tokens.mean(1), codes=codes, aux_loss=aux)
