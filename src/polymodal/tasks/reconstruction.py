"""Reconstruction: the training task of a modality tokenizer (docs/concepts.md#tokenizers). Its head is the
decoder that turns the encoder's quantised tokens back into what the encoder read (an image's pixels, a
sound's log-mel spectrogram: the encoder's `reconstruction_target`); the loss is L1 or L2 on it plus the
quantiser's own (a VQ codebook's commitment). Scored by PSNR, SSIM (of the image, of the spectrogram read
as one) and codebook usage: the share of codes used over the evaluated items, and the perplexity of their
distribution."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..models.output import ModelOutput
from ..metrics import code_usage, psnr, ssim
from ..modalities.quantizing import QuantizingEncoder
from .base import Borrowed, Task, TaskData

LOSSES = ("l1", "l2")
MODALITIES = ("image", "audio", "video")  # those with a tokenizer
Batch = dict[str, dict[str, torch.Tensor]]


class ReconstructionData(TaskData):
    """The media a tokenizer learns to reconstruct: `inputs` names its one field, an image's, a sound's or a clip's
    (its target is the media itself, so records need nothing else).

    Args:
        inputs: {image: FIELD} (the default), {audio: FIELD} or {video: FIELD}.
    """

    inputs = {"image": "image"}

    def __init__(self, *, inputs: dict[str, str] | None = None):
        super().__init__(inputs=inputs)
        if len(self.inputs) != 1 or next(iter(self.inputs)) not in MODALITIES:
            raise ValueError(f"inputs: reconstruction reads one field of {' or '.join(MODALITIES)}, got "
                             f"{sorted(self.inputs)}")
        self.modality = next(iter(self.inputs))
        self.num_codes = 0  # the head sets it

    def metrics(self, predictions: list[dict[str, Any]], records: list[dict[str, Any]]) -> dict[str, float]:
        """Mean PSNR (dB) and SSIM over the items, and the codes' usage and perplexity over all of them."""
        n = max(1, len(predictions))
        return {"psnr": sum(p["psnr"] for p in predictions) / n, "ssim": sum(p["ssim"] for p in predictions) / n,
                **code_usage([p["codes"] for p in predictions], self.num_codes)}


class ReconstructionTask(Task):
    """Decode the tokenizer encoder's quantised tokens back to its input (`out.modalities[modality]`).

    Args:
        data: its data side.
        encoder: the backbone's encoder of that modality, a quantising one (type: tokenizer; the builder
            gives it).
        width: D, its tokens' width.
        loss: "l1" (default, sharper edges) or "l2", on the target in about [-1, 1] (pixels; a log-mel).
        weight: multi-task loss weight.
    """

    data_class = ReconstructionData
    data: ReconstructionData
    needs_fusion = False
    corrupts = True  # its target is its input, taken in `corrupt`

    def __init__(self, data: ReconstructionData, *, encoder: nn.Module, width: int, loss: str = "l1",
                 weight: float = 1.0):
        super().__init__(data, weight=weight)
        if not isinstance(encoder, QuantizingEncoder):
            raise ValueError(f"reconstruction needs a {data.modality} encoder of type tokenizer (a quantising one), "
                             f"got {type(encoder).__name__}")
        if loss not in LOSSES:
            raise ValueError(f"loss: expected one of {', '.join(LOSSES)}, got {loss!r}")
        self.encoder, self.loss_type = Borrowed(encoder), loss
        self.decoder = encoder.make_decoder(width)
        data.num_codes = encoder.num_codes

    def corrupt(self, inputs: Batch, target: Any) -> tuple[Batch, torch.Tensor]:
        """The inputs unchanged, and what to reconstruct (the encoder's target: pixels normalised to
        [-1, 1], a normalised log-mel)."""
        return inputs, self.encoder.module.reconstruction_target(inputs[self.data.modality]["data"])

    def forward(self, out: ModelOutput, target: torch.Tensor) -> dict[str, torch.Tensor]:
        encoded = out.modalities[self.data.modality]
        rebuilt = self.decoder(encoded.tokens).float()
        error = F.l1_loss(rebuilt, target.float()) if self.loss_type == "l1" else F.mse_loss(rebuilt, target.float())
        aux = encoded.aux_loss if encoded.aux_loss is not None else rebuilt.new_zeros(())
        return {"loss": error + aux}

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, D) tokens → the reconstruction as an image in [0, 1]: (B, 3, S, S) pixels, (B, 1, M, T) a
        log-mel."""
        return self.encoder.module.as_image(self.decoder(tokens))

    @torch.no_grad()
    def predict(self, model: nn.Module, inputs: Batch) -> list[dict[str, Any]]:
        """Per item: PSNR and SSIM of its reconstruction (as an image in [0, 1]) and its codes."""
        modality, encoder = self.data.modality, self.encoder.module
        encoded = model.encode(inputs, fuse=False).modalities[modality]
        original = encoder.as_image(encoder.reconstruction_target(inputs[modality]["data"]))
        rebuilt = self.decode(encoded.tokens)
        return [{"psnr": float(p), "ssim": float(s), "codes": c.cpu()}
                for p, s, c in zip(psnr(rebuilt, original), ssim(rebuilt, original), encoded.codes)]
