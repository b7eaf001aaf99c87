"""Reconstruction: the training task of a modality tokenizer (docs/concepts.md#tokenizers). Its head is the
pixel decoder that turns the encoder's quantised tokens back into the image; the loss is L1 or L2 on the
pixels plus the quantiser's own (a VQ codebook's commitment). Scored by PSNR, SSIM and codebook usage:
the share of codes used over the evaluated images, and the perplexity of their distribution."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..models.output import ModelOutput
from ..metrics import code_usage, psnr, ssim
from ..modalities.image.tokenizer import PixelDecoder, QuantizedImageEncoder
from .base import Borrowed, Task, TaskData

LOSSES = ("l1", "l2")
Batch = dict[str, dict[str, torch.Tensor]]


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
        self.decoder = PixelDecoder(width, encoder.grid, encoder.channels, encoder.norm, encoder.padding)
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
