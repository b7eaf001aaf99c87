"""The shared back half of patch encoders (ViT, spectrogram transformer, tubelet ViT): patch tokens →
[CLS; patches] + learned positions → transformer → projection to D; pooled = the CLS output."""

from __future__ import annotations

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

    def __init__(self, *, num_patches: int, out_dim: int, width: int, depth: int, num_heads: int,
                 mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.num_tokens = 1 + num_patches
        self.cls_token = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.positions = LearnedPositions(width, self.num_tokens)
        self.encoder = TransformerEncoder(width, depth, num_heads, mlp_ratio=mlp_ratio, dropout=dropout)
        # the encoder already ends in a LayerNorm; a second square Linear would add nothing learnable
        self.proj = nn.Identity() if width == out_dim else nn.Linear(width, out_dim)

    def init_weights(self) -> None:
        """GPT/BERT-style initialisation of everything, patch embedding included (call last in __init__)."""
        init_weights_(self)

    def encode_patches(self, patches: torch.Tensor, patch_times: torch.Tensor | None = None) -> EncoderOutput:
        """(B, patches, width) → tokens (B, 1 + patches, D) with the CLS first, an all-True mask, pooled = CLS.
        `patch_times` (patches,): when each patch happens (timed media); the CLS gets NaN."""
        x = torch.cat([self.cls_token.expand(patches.shape[0], -1, -1), patches], dim=1)  # (B, 1 + N, width)
        tokens = self.proj(self.encoder(self.positions(x)))  # (B, 1 + N, D)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        times = None
        if patch_times is not None:
            times = torch.cat([patch_times.new_full((1,), float("nan")), patch_times])
        return EncoderOutput(tokens=tokens, mask=mask, pooled=tokens[:, 0], times=times)
