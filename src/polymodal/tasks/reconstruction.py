"""Reconstruction: the training task of a modality tokenizer (docs/concepts.md#tokenizers). Its head is the
pixel decoder that turns the encoder's quantised tokens back into the image; the loss is L1 or L2 on the
pixels plus the quantiser's own (a VQ codebook's commitment). Scored by PSNR, SSIM and codebook usage:
the share of codes used over the evaluated images, and the perplexity of their distribution."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..models.output import ModelOutput
from ..modalities.image.tokenizer import PixelDecoder, QuantizedImageEncoder, psnr
from .base import Borrowed, Task, TaskData

LOSSES = ("l1", "l2")
Batch = dict[str, dict[str, torch.Tensor]]


def ssim(prediction: torch.Tensor, target: torch.Tensor, peak: float = 1.0, window: int = 11,
         sigma: float = 1.5) -> torch.Tensor:
    """(B,) structural similarity (Wang et al. 2004) of images (B, C, H, W) in [0, peak]: local means,
    variances and covariance under a Gaussian window (11 × 11, σ 1.5, no padding), C1 = (0.01·peak)², C2 =
    (0.03·peak)², averaged over pixels and channels."""
    x, y = prediction.double(), target.double()  # variances as differences of means: float64 keeps them
    channels = x.shape[1]
    size = min(window, x.shape[-1], x.shape[-2])
    offsets = torch.arange(size, dtype=torch.float64, device=x.device) - (size - 1) / 2
    g = torch.exp(-offsets**2 / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(channels, 1, size, size)
    blur = lambda t: F.conv2d(t, kernel, groups=channels)  # noqa: E731
    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    value = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return value.flatten(1).mean(1).float()


def code_usage(codes: list[torch.Tensor], num_codes: int) -> dict[str, float]:
    """`codebook_usage`: the share of the `num_codes` codes that occur in `codes`; `perplexity`: exp of the
    entropy of their frequencies (num_codes when all are equally frequent, 1 when one code is all)."""
    counts = torch.bincount(torch.cat([c.flatten() for c in codes]).long(), minlength=num_codes).float()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {"codebook_usage": float((counts > 0).sum()) / num_codes, "perplexity": float(math.exp(entropy))}


class ReconstructionData(TaskData):
    """The images a tokenizer learns to reconstruct: `inputs` names the image field (its target is the
    image itself, so records need nothing else).

    Args:
        inputs: {image: FIELD}.
    """

    inputs = {"image": "image"}

    def __init__(self, *, inputs: dict[str, str] | None = None):
        super().__init__(inputs=inputs)
        if list(self.inputs) != ["image"]:
            raise ValueError(f"inputs: reconstruction reads one image field, got {sorted(self.inputs)}")
        self.modality = "image"
        self.num_codes = 0  # the head sets it

    def metrics(self, predictions: list[dict[str, Any]], records: list[dict[str, Any]]) -> dict[str, float]:
        """Mean PSNR (dB) and SSIM over the images, and the codes' usage and perplexity over all of them."""
        n = max(1, len(predictions))
        return {"psnr": sum(p["psnr"] for p in predictions) / n, "ssim": sum(p["ssim"] for p in predictions) / n,
                **code_usage([p["codes"] for p in predictions], self.num_codes)}


class ReconstructionTask(Task):
    """Decode the tokenizer encoder's quantised tokens back to the image (`out.modalities["image"]`).

    Args:
        data: its data side.
        encoder: the backbone's image encoder, a `QuantizedImageEncoder` (type: tokenizer; the builder gives it).
        width: D, its tokens' width.
        loss: "l1" (default, sharper edges) or "l2" on pixels in [-1, 1].
        weight: multi-task loss weight.
    """

    data_class = ReconstructionData
    data: ReconstructionData
    needs_fusion = False
    corrupts = True  # its target is its input, taken in `corrupt`

    def __init__(self, data: ReconstructionData, *, encoder: nn.Module, width: int, loss: str = "l1",
                 weight: float = 1.0):
        super().__init__(data, weight=weight)
        if not isinstance(encoder, QuantizedImageEncoder):
            raise ValueError(f"reconstruction needs an image encoder of type tokenizer (a quantising one), "
                             f"got {type(encoder).__name__}")
        if loss not in LOSSES:
            raise ValueError(f"loss: expected one of {', '.join(LOSSES)}, got {loss!r}")
        self.encoder, self.loss_type = Borrowed(encoder), loss
        self.decoder = PixelDecoder(width, encoder.grid, encoder.channels)
        data.num_codes = encoder.num_codes

    def corrupt(self, inputs: Batch, target: Any) -> tuple[Batch, torch.Tensor]:
        """The inputs unchanged, and the pixels to reconstruct (normalised to [-1, 1])."""
        return inputs, inputs["image"]["data"]

    def forward(self, out: ModelOutput, target: torch.Tensor) -> dict[str, torch.Tensor]:
        encoded = out.modalities["image"]
        image = self.decoder(encoded.tokens).float()
        error = F.l1_loss(image, target.float()) if self.loss_type == "l1" else F.mse_loss(image, target.float())
        aux = encoded.aux_loss if encoded.aux_loss is not None else image.new_zeros(())
        return {"loss": error + aux}

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, D) tokens → (B, 3, S, S) images in [0, 1]."""
        return ((self.decoder(tokens).float() + 1) / 2).clamp(0, 1)

    @torch.no_grad()
    def predict(self, model: nn.Module, inputs: Batch) -> list[dict[str, Any]]:
        """Per image: PSNR and SSIM of its reconstruction (in [0, 1]) and its codes."""
        encoded = model.encode(inputs, fuse=False).modalities["image"]
        original = ((inputs["image"]["data"].float() + 1) / 2).clamp(0, 1)
        rebuilt = self.decode(encoded.tokens)
        return [{"psnr": float(p), "ssim": float(s), "codes": c.cpu()}
                for p, s, c in zip(psnr(rebuilt, original), ssim(rebuilt, original), encoded.codes)]
