"""The shared back half of patch encoders (ViT, spectrogram transformer, tubelet ViT): patch tokens →
[CLS; patches] + learned positions → transformer → projection to D; pooled = the CLS output.

Token masking (masked modelling, SimMIM-style): `enable_token_masking()` gives the encoder a learned mask
token; `forward(..., token_mask=...)` then replaces the masked patches' embeddings by it before the
transformer, and `patch_targets(data)` says what each patch token should reconstruct: (B, num_patches,
patch_dim), the patch tokens being the output tokens from `patch_start` on. The CNN image encoder keeps
the same contract without a mask token (it zeroes the masked cells' pixels).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from polymodal.layers import LearnedPositions, TransformerEncoder, init_weights_
from polymodal.modalities.base import EncoderOutput


class PatchTransformerEncoder(nn.Module):
    """Base class: a subclass builds its `patch_embed` and turns its input into (B, patches, width) tokens,
    then calls `encode_patches`. Parameter names (cls_token, positions, encoder, proj) are the same in
    every subclass, so their checkpoints read alike.

    Args:
        num_patches: patch tokens per example (the CLS comes on top).
        out_dim: width D of the returned tokens.
        width, depth, num_heads, mlp_ratio, dropout: the transformer.
    """

    patch_start = 1  # output token index of the first patch (the CLS comes before)
    patch_dim: int  # values per patch in `patch_targets`; a subclass sets it

    def __init__(self, *, num_patches: int, out_dim: int, width: int, depth: int, num_heads: int,
                 mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.num_patches = num_patches
        self.num_tokens = 1 + num_patches
        self.cls_token = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.positions = LearnedPositions(width, self.num_tokens)
        self.encoder = TransformerEncoder(width, depth, num_heads, mlp_ratio=mlp_ratio, dropout=dropout)
        # the encoder already ends in a LayerNorm; a second square Linear would add nothing learnable
        self.proj = nn.Identity() if width == out_dim else nn.Linear(width, out_dim)

    def init_weights(self) -> None:
        """GPT/BERT-style initialisation of everything, patch embedding included (call last in __init__)."""
        init_weights_(self)

    def enable_token_masking(self) -> None:
        """Give the encoder its learned mask token (zeros at first), so `token_mask` can be passed. Only
        models trained with masked modelling have it, so other runs keep the state dict they always had."""
        if getattr(self, "mask_token", None) is None:
            self.mask_token = nn.Parameter(torch.zeros(1, 1, self.cls_token.shape[-1]))

    def encode_patches(self, patches: torch.Tensor, patch_times: torch.Tensor | None = None,
                       token_mask: torch.Tensor | None = None) -> EncoderOutput:
        """(B, patches, width) → tokens (B, 1 + patches, D) with the CLS first, an all-True mask, pooled = CLS.
        `patch_times` (patches,): when each patch happens (timed media); the CLS gets NaN. `token_mask`
        (B, patches) bool: the patches whose embedding the mask token replaces (their positions stay)."""
        if token_mask is not None:
            check_token_mask(token_mask, patches.shape[0], patches.shape[1])
            if getattr(self, "mask_token", None) is None:
                raise ValueError(f"{type(self).__name__} was given a token_mask but has no mask token: "
                                 f"call enable_token_masking() when building it (a masked modelling task does)")
            patches = torch.where(token_mask[..., None], self.mask_token.to(patches.dtype), patches)
        x = torch.cat([self.cls_token.expand(patches.shape[0], -1, -1), patches], dim=1)  # (B, 1 + N, width)
        tokens = self.proj(self.encoder(self.positions(x)))  # (B, 1 + N, D)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        times = None
        if patch_times is not None:
            times = torch.cat([patch_times.new_full((1,), float("nan")), patch_times])
        return EncoderOutput(tokens=tokens, mask=mask, pooled=tokens[:, 0], times=times)


def check_token_mask(token_mask: torch.Tensor, batch: int, patches: int) -> None:
    """A token mask must be (B, patches) bool."""
    if token_mask.dtype != torch.bool or tuple(token_mask.shape) != (batch, patches):
        raise ValueError(f"expected token_mask (B, patches) = ({batch}, {patches}) bool, "
                         f"got {tuple(token_mask.shape)} {token_mask.dtype}")


def patchify(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Cut (B, C, *dims) into non-overlapping blocks of `size` (one per dim), in row-major block order
    (what a strided convolution's flattened output lists): (B, blocks, C · prod(size)), each block's
    values in (C, *size) order. Each dim must be a multiple of its size."""
    b, c, *dims = x.shape
    grid = [d // s for d, s in zip(dims, size)]
    x = x.reshape(b, c, *[v for g, s in zip(grid, size) for v in (g, s)])  # (B, C, g0, s0, g1, s1, ...)
    n = len(dims)
    order = [0, *(2 + 2 * i for i in range(n)), 1, *(3 + 2 * i for i in range(n))]  # (B, g..., C, s...)
    return x.permute(order).reshape(b, math.prod(grid), c * math.prod(size))
