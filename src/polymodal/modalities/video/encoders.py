"""Video encoders: a tubelet ViT, a 3-D CNN, and per-frame image encoding + a temporal transformer that
can fuse the clip's audio track (docs/concepts.md#representation: "3D convolution or fusing image and audio
information")."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from polymodal.layers import LearnedPositions, TransformerEncoder
from polymodal.layers.positions import interval_centres
from polymodal.modalities.base import EncoderOutput
from polymodal.modalities.patches import PatchTransformerEncoder, patchify


def _check_video(video: torch.Tensor, num_frames: int, image_size: int) -> None:
    if video.ndim != 5 or tuple(video.shape[1:]) != (num_frames, 3, image_size, image_size):
        raise ValueError(f"expected videos (B, {num_frames}, 3, {image_size}, {image_size}) for "
                         f"num_frames={num_frames}, image_size={image_size}, got {tuple(video.shape)}")


def _all_real(tokens: torch.Tensor) -> torch.Tensor:
    return torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)


class TubeletViT(PatchTransformerEncoder):
    """Video ViT: non-overlapping tubelets (tubelet frames x patch x patch) embedded by one 3-D convolution,
    a CLS token and learned positions, then a transformer; pooled = CLS.

    Args:
        out_dim: width D of the returned tokens.
        image_size, num_frames: the clip the processor delivers.
        patch_size, tubelet: spatial and temporal tubelet size (must divide image_size and num_frames).
        width: the transformer's width (its tokens are projected to `out_dim` after).
        depth: the number of transformer blocks.
        num_heads: attention heads per block (must divide `width`).
        mlp_ratio: the MLP's hidden width, as a multiple of `width`.
        dropout: dropout on attention weights and MLP outputs.
    """

    def __init__(self, *, out_dim: int, image_size: int = 32, num_frames: int = 8, patch_size: int = 8,
                 tubelet: int = 2, width: int = 128, depth: int = 2, num_heads: int = 4, mlp_ratio: float = 4.0,
                 dropout: float = 0.0) -> None:
        if image_size % patch_size or num_frames % tubelet:
            raise ValueError(f"patch_size={patch_size} must divide image_size={image_size} and "
                             f"tubelet={tubelet} must divide num_frames={num_frames}")
        super().__init__(num_patches=(num_frames // tubelet) * (image_size // patch_size) ** 2, out_dim=out_dim,
                         width=width, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, dropout=dropout)
        self.image_size, self.num_frames = image_size, num_frames
        self.patch_dim = 3 * tubelet * patch_size ** 2
        self.patch_embed = nn.Conv3d(3, width, kernel_size=(tubelet, patch_size, patch_size),
                                     stride=(tubelet, patch_size, patch_size))
        self.init_weights()

    def patch_targets(self, video: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, S, S) → (B, tubelets, 3 · tubelet · patch²): each tubelet's pixels (channel, frame,
        row, column order), time-major like the tubelet tokens."""
        _check_video(video, self.num_frames, self.image_size)
        return patchify(video.transpose(1, 2), self.patch_embed.kernel_size)  # from (B, 3, T, S, S)

    def forward(self, video: torch.Tensor, token_mask: torch.Tensor | None = None) -> EncoderOutput:
        """(B, T, 3, S, S) → tokens (B, 1 + tubelets, D), time-major after the CLS. `token_mask` (B, tubelets)
        bool: tubelets replaced by the mask token (see `enable_token_masking`)."""
        _check_video(video, self.num_frames, self.image_size)
        patches = self.patch_embed(video.transpose(1, 2))  # (B, width, T', h, w)
        steps, cells = patches.shape[2], patches.shape[3] * patches.shape[4]
        times = interval_centres(steps, video.device).repeat_interleave(cells)
        return self.encode_patches(patches.flatten(2).transpose(1, 2), times, token_mask=token_mask)


class _Block3d(nn.Module):
    """conv3x3x3-GN-GELU-conv3x3x3-GN plus a (strided 1x1x1 when needed) skip, then GELU."""

    def __init__(self, in_channels: int, out_channels: int, stride: tuple[int, int, int], groups: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.GroupNorm(groups, out_channels), nn.GELU(),
            nn.Conv3d(out_channels, out_channels, 3, padding=1, bias=False), nn.GroupNorm(groups, out_channels))
        self.skip = nn.Sequential(nn.Conv3d(in_channels, out_channels, 1, stride=stride, bias=False),
                                  nn.GroupNorm(groups, out_channels))
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.skip(x))


class Conv3DEncoder(nn.Module):
    """A small 3-D ResNet: each stage halves height and width (and time where `temporal_strides` says 2);
    each cell of the final (T', h, w) grid becomes a token with a learned position; pooled = mean.

    Args:
        out_dim: width D of the returned tokens.
        image_size, num_frames: the clip the processor delivers.
        channels: channels per stage.
        temporal_strides: per stage, 1 (keep the frame rate) or 2 (halve it).
        groups: GroupNorm groups (must divide every entry of `channels`).
    """

    def __init__(self, *, out_dim: int, image_size: int = 32, num_frames: int = 8,
                 channels: Sequence[int] = (32, 64), temporal_strides: Sequence[int] = (1, 2), groups: int = 8) -> None:
        super().__init__()
        if len(temporal_strides) != len(channels) or any(s not in (1, 2) for s in temporal_strides):
            raise ValueError(f"temporal_strides: expected one 1 or 2 per stage of channels={list(channels)}, "
                             f"got {list(temporal_strides)}")
        if any(c % groups for c in channels):
            raise ValueError(f"groups={groups} must divide every entry of channels={list(channels)}")
        self.image_size, self.num_frames = image_size, num_frames
        self.stem = nn.Sequential(nn.Conv3d(3, channels[0], 3, padding=1, bias=False),
                                  nn.GroupNorm(groups, channels[0]), nn.GELU())
        blocks, in_channels, frames, side = [], channels[0], num_frames, image_size
        for out_channels, t_stride in zip(channels, temporal_strides):
            blocks.append(_Block3d(in_channels, out_channels, (t_stride, 2, 2), groups))
            in_channels, frames, side = out_channels, (frames - 1) // t_stride + 1, (side + 1) // 2
        self.blocks = nn.Sequential(*blocks)
        self.num_tokens = frames * side * side
        self.proj = nn.Linear(in_channels, out_dim)
        self.positions = LearnedPositions(out_dim, self.num_tokens)

    def forward(self, video: torch.Tensor) -> EncoderOutput:
        """(B, T, 3, S, S) → tokens (B, T'·h·w, D), time-major."""
        _check_video(video, self.num_frames, self.image_size)
        features = self.blocks(self.stem(video.transpose(1, 2)))  # (B, C, T', h, w)
        tokens = self.positions(self.proj(features.flatten(2).transpose(1, 2)))
        times = interval_centres(features.shape[2], video.device).repeat_interleave(features.shape[3] * features.shape[4])
        return EncoderOutput(tokens=tokens, mask=_all_real(tokens), pooled=tokens.mean(dim=1), times=times)


class FrameEncoder(nn.Module):
    """Any image encoder on every frame, its pooled vector per frame + learned time positions → a temporal
    transformer. With `audio`, the clip's audio track is encoded too and its tokens join the temporal
    sequence (with a type embedding), so attention fuses picture and sound over time.

    Args:
        out_dim: width D of the returned tokens.
        frame: the image encoder run on every frame (built with `nested_settings("frame", ...)`: width
            `out_dim`, `image_size`, 6 input channels with `motion`). Configured as
            `frame: {type: cnn, channels: [32, 64]}` (any image encoder type).
        image_size, num_frames: the clip the processor delivers.
        depth, num_heads: the temporal transformer.
        audio: an audio encoder for the clip's sound track (width `out_dim`), configured as
            `audio: {type: conv, duration: 2.0}` (any audio encoder type); None: pictures only.
        frame_tokens: feed every frame's tokens (not only one vector per frame) to the temporal transformer.
        frame_readout: 0: a frame's vector is its encoder's pooled vector (what is in the picture);
            k > 0: every frame token is projected to k values and all of them, in place, map to the
            frame's vector, so it also says *where* things are (what "which way does it move?" needs).
        motion: give the frame encoder each frame together with its difference from the frame before
            (zero for the first), 6 channels: what moved, and which way, is then in one frame's input
            (TSN's "RGB difference"), not only in the comparison of two frames' vectors.
    """

    @staticmethod
    def nested_encoders() -> dict[str, tuple[str, dict[str, Any] | None]]:
        """The config keys holding another modality's encoder: the builder builds them and passes them in."""
        return {"frame": ("image", {"type": "cnn"}), "audio": ("audio", None)}

    @staticmethod
    def nested_settings(key: str, *, out_dim: int, image_size: int = 32, motion: bool = False,
                        **_: Any) -> dict[str, Any]:
        """What this encoder gives the nested encoder under `key`, from its own settings."""
        if key == "frame":
            return {"out_dim": out_dim, "image_size": image_size, "in_channels": 6 if motion else 3}
        return {"out_dim": out_dim}

    def __init__(self, *, out_dim: int, frame: nn.Module, image_size: int = 32, num_frames: int = 8,
                 depth: int = 1, num_heads: int = 4, audio: nn.Module | None = None, frame_tokens: bool = False,
                 frame_readout: int = 0, motion: bool = False) -> None:
        super().__init__()
        if frame_tokens and frame_readout:
            raise ValueError("frame_tokens and frame_readout are two ways to read a frame: choose one")
        self.image_size, self.num_frames, self.frame_tokens, self.motion = image_size, num_frames, frame_tokens, motion
        self.frame = frame
        self.readout = None
        if frame_readout > 0:
            self.readout = nn.Sequential(nn.Linear(out_dim, frame_readout), nn.Flatten(1),
                                         nn.Linear(frame_readout * self.frame.num_tokens, out_dim), nn.LayerNorm(out_dim))
        self.audio = audio
        per_frame = self.frame.num_tokens if frame_tokens else 1
        self.time_positions = LearnedPositions(out_dim, num_frames * per_frame)
        self.types = nn.Parameter(torch.randn(2, out_dim) * 0.02)  # 0: picture, 1: sound
        self.temporal = TransformerEncoder(out_dim, depth, num_heads)

    def forward(self, video: torch.Tensor, audio: torch.Tensor | None = None) -> EncoderOutput:
        """(B, T, 3, S, S) [+ (B, samples) audio] → tokens (B, T [·frame tokens] [+ audio tokens], D); pooled = mean."""
        _check_video(video, self.num_frames, self.image_size)
        batch = video.shape[0]
        if self.motion:
            change = torch.cat([torch.zeros_like(video[:, :1]), video[:, 1:] - video[:, :-1]], dim=1)
            video = torch.cat([video, change], dim=2)  # (B, T, 6, S, S)
        frames = self.frame(video.flatten(0, 1))  # EncoderOutput over B·T frames
        if self.frame_tokens:
            per_frame = frames.tokens  # (B·T, n, D)
        elif self.readout is not None:
            per_frame = self.readout(frames.tokens)[:, None]  # (B·T, 1, D): what and where
        else:
            per_frame = frames.pooled[:, None]  # (B·T, 1, D)
        x = self.time_positions(per_frame.reshape(batch, -1, per_frame.shape[-1])) + self.types[0]  # (B, T·n, D)
        times = interval_centres(self.num_frames, video.device).repeat_interleave(per_frame.shape[1])
        if self.audio is not None:
            if audio is None:
                raise ValueError("this video encoder fuses the audio track: pass audio (B, samples) too")
            track = self.audio(audio)
            x = torch.cat([x, track.tokens + self.types[1]], dim=1)
            times = torch.cat([times, track.times])
        tokens = self.temporal(x)
        return EncoderOutput(tokens=tokens, mask=_all_real(tokens), pooled=tokens.mean(dim=1), times=times)

