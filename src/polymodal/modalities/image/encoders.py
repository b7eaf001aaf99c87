"""Image encoders: a small ResNet-style CNN and a ViT, both images -> EncoderOutput."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from polymodal.layers import LearnedPositions
from polymodal.layers.positions import Sinusoidal2DPositions
from polymodal.modalities.base import EncoderOutput
from polymodal.modalities.patches import PatchTransformerEncoder, check_token_mask, patchify


def _check_image_size(images: torch.Tensor, image_size: int, in_channels: int = 3) -> None:
    if images.ndim != 4 or tuple(images.shape[1:]) != (in_channels, image_size, image_size):
        raise ValueError(
            f"expected images (B, {in_channels}, {image_size}, {image_size}) for image_size={image_size}, "
            f"got {tuple(images.shape)}"
        )


def _group_norm(groups: int, channels: int) -> nn.GroupNorm:
    if channels % groups != 0:
        raise ValueError(f"groups={groups} does not divide channels={channels}")
    return nn.GroupNorm(groups, channels)


class _ResidualBlock(nn.Module):
    """conv3x3-GN-GELU-conv3x3-GN plus a skip (1x1 conv + GN when the shape changes), then GELU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            _group_norm(groups, out_channels),
            nn.GELU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            _group_norm(groups, out_channels),
        )
        if stride != 1 or in_channels != out_channels:
            self.skip = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                _group_norm(groups, out_channels),
            )
        else:
            self.skip = nn.Identity()
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.skip(x))


class CNNImageEncoder(nn.Module):
    """Small ResNet: each cell of the final feature map becomes one token.

    GroupNorm, not BatchNorm, so a data-parallel run computes exactly what a single process does.

    Args:
        out_dim: width D of the returned tokens.
        image_size: input height and width.
        channels: channels per stage; each stage halves the resolution (stride-2 first block).
        blocks_per_stage: residual blocks per stage, the downsampling one included.
        groups: GroupNorm groups; must divide every entry of `channels`.
        positions: `learned` per grid cell, or fixed `sinusoidal2d` (row and column each readable).
        coordinates: feed x and y coordinate channels to the first convolution (CoordConv), so the
            features themselves know where they are; a plain CNN is translation-equivariant.
        in_channels: input channels (3: RGB; a video frame encoder with `motion` gives 6).
    """

    def __init__(
        self,
        *,
        out_dim: int,
        image_size: int = 64,
        channels: Sequence[int] = (32, 64, 128),
        blocks_per_stage: int = 1,
        groups: int = 8,
        positions: str = "learned",
        coordinates: bool = False,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.image_size, self.in_channels = image_size, in_channels
        self.coordinates = coordinates
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels + 2 * coordinates, channels[0], 3, padding=1, bias=False),
            _group_norm(groups, channels[0]), nn.GELU()
        )
        stages = []
        in_channels, side = channels[0], image_size
        for out_channels in channels:
            stages.append(_ResidualBlock(in_channels, out_channels, stride=2, groups=groups))
            stages.extend(
                _ResidualBlock(out_channels, out_channels, stride=1, groups=groups) for _ in range(blocks_per_stage - 1)
            )
            in_channels, side = out_channels, (side + 1) // 2  # 3x3 conv, stride 2, padding 1
        self.stages = nn.Sequential(*stages)
        self.num_tokens = side * side
        self.proj = nn.Linear(channels[-1], out_dim)
        if positions == "learned":
            self.positions = LearnedPositions(out_dim, self.num_tokens)
        elif positions == "sinusoidal2d":
            self.positions = Sinusoidal2DPositions(out_dim, side, side)
        else:
            raise ValueError(f"positions: expected 'learned' or 'sinusoidal2d', got {positions!r}")

    patch_start = 0  # every output token is a cell

    @property
    def num_patches(self) -> int:
        return self.num_tokens

    @property
    def patch_dim(self) -> int:
        """Values per cell in `patch_targets`: in_channels · cell²."""
        return self.in_channels * self._cell() ** 2

    def enable_token_masking(self) -> None:
        """Check that each token's cell is a whole block of pixels (masking needs no parameters here)."""
        self._cell()

    def _cell(self) -> int:
        """The side in pixels of the block each token stands for."""
        side = math.isqrt(self.num_tokens)
        if self.image_size % side:
            raise ValueError(f"token masking needs image_size={self.image_size} to be a multiple of the "
                             f"{side}x{side} token grid")
        return self.image_size // side

    def patch_targets(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) → (B, num_tokens, C · cell²): each token's block of pixels, row-major like the tokens."""
        _check_image_size(images, self.image_size, self.in_channels)
        cell = self._cell()
        return patchify(images, (cell, cell))

    def forward(self, images: torch.Tensor, token_mask: torch.Tensor | None = None) -> EncoderOutput:
        """Encode a batch of normalised images.

        Args:
            images: (B, in_channels, image_size, image_size) float.
            token_mask: (B, num_tokens) bool: the cells whose pixels are zeroed before the network (a
                convolution has no token to replace; its receptive field still reaches over neighbours).

        Returns:
            EncoderOutput with tokens (B, num_tokens, out_dim), an all-True mask (B, num_tokens) and
            pooled (B, out_dim) = mean of the tokens.
        """
        _check_image_size(images, self.image_size, self.in_channels)
        if token_mask is not None:
            check_token_mask(token_mask, images.shape[0], self.num_tokens)
            cell, side = self._cell(), math.isqrt(self.num_tokens)
            pixels = token_mask.reshape(-1, 1, side, side).repeat_interleave(cell, 2).repeat_interleave(cell, 3)
            images = images.masked_fill(pixels, 0.0)  # (B, C, S, S)
        if self.coordinates:
            side = torch.linspace(-1.0, 1.0, self.image_size, device=images.device, dtype=images.dtype)
            y, x = torch.meshgrid(side, side, indexing="ij")  # (S, S) each
            grid = torch.stack([x, y]).expand(images.shape[0], -1, -1, -1)  # (B, 2, S, S)
            images = torch.cat([images, grid], dim=1)  # (B, 5, S, S)
        # Not channels-last: 23% faster convolutions here, but oneDNN then picks its algorithm by batch size,
        # and an example's outputs alone and in a batch differed by up to 1e-3 after the fusion
        features = self.stages(self.stem(images))  # (B, C, h, w)
        tokens = self.positions(self.proj(features.flatten(2).transpose(1, 2)))  # (B, h*w, out_dim)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)  # (B, h*w)
        return EncoderOutput(tokens=tokens, mask=mask, pooled=tokens.mean(dim=1))


class ViTImageEncoder(PatchTransformerEncoder):
    """Vision transformer: non-overlapping patches + a CLS token through a pre-norm transformer.

    Args:
        out_dim: width D of the returned tokens.
        image_size: input height and width; must be a multiple of `patch_size`.
        patch_size: side of each square patch.
        width: transformer width.
        depth: number of transformer blocks.
        num_heads: attention heads (must divide `width`).
        mlp_ratio: MLP hidden width as a multiple of `width`.
        dropout: dropout inside the transformer.
        in_channels: input channels (3: RGB; a video frame encoder with `motion` gives 6).
    """

    def __init__(
        self,
        *,
        out_dim: int,
        image_size: int = 64,
        patch_size: int = 8,
        width: int = 128,
        depth: int = 2,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        in_channels: int = 3,
    ) -> None:
        if image_size % patch_size != 0:
            raise ValueError(f"image_size={image_size} is not a multiple of patch_size={patch_size}")
        super().__init__(num_patches=(image_size // patch_size) ** 2, out_dim=out_dim, width=width, depth=depth,
                         num_heads=num_heads, mlp_ratio=mlp_ratio, dropout=dropout)
        self.image_size, self.in_channels = image_size, in_channels
        self.patch_dim = in_channels * patch_size ** 2
        self.patch_embed = nn.Conv2d(in_channels, width, kernel_size=patch_size, stride=patch_size)
        self.init_weights()

    def patch_targets(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, S, S) → (B, patches, C · patch²): each patch's pixels, in the order of the patch tokens."""
        _check_image_size(images, self.image_size, self.in_channels)
        return patchify(images, self.patch_embed.kernel_size)

    def forward(self, images: torch.Tensor, token_mask: torch.Tensor | None = None) -> EncoderOutput:
        """Encode a batch of normalised images.

        Args:
            images: (B, in_channels, image_size, image_size) float.
            token_mask: (B, patches) bool: patches replaced by the mask token (see `enable_token_masking`).

        Returns:
            EncoderOutput with tokens (B, 1 + patches, out_dim) (CLS first), an all-True mask and
            pooled (B, out_dim) = the projected CLS token.
        """
        _check_image_size(images, self.image_size, self.in_channels)
        patches = self.patch_embed(images).flatten(2).transpose(1, 2)  # (B, patches, width)
        return self.encode_patches(patches, token_mask=token_mask)
