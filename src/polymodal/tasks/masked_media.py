"""Masked image / video / audio modelling (SimMIM, MAE's loss): hide a share of an encoder's patch tokens
and regress what they hid (pixels, tubelet pixels, spectrogram patches) from the rest."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..models.output import ModelOutput
from ..modalities.registry import MODALITIES
from ..modalities.base import MasksTokens
from .base import Borrowed, Task, TaskData

EVAL_SEED = 0  # evaluation masks with a generator seeded by this, so its metrics are reproducible
Batch = dict[str, dict[str, torch.Tensor]]  # modality → its collated inputs ("data", "token_mask", ...)


def random_token_mask(batch: int, tokens: int, ratio: float, generator: torch.Generator | None = None,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, N) bool with exactly round(ratio · N) True per row (at least 1, at most N - 1), uniformly placed.

    Args:
        batch: B.
        tokens: N, the patch tokens per example.
        ratio: the share to mask.
        generator: the random source; None: torch's global one.
        device: where the mask goes.
    """
    count = min(max(round(ratio * tokens), 1), tokens - 1)
    rank = torch.rand(batch, tokens, generator=generator).argsort(dim=1).argsort(dim=1)  # (B, N) a random order
    return (rank < count).to(device)


def normalise_patches(targets: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """MAE's per-patch normalisation: each patch's values minus their mean, over sqrt(variance + eps)
    (the unbiased variance, as MAE's code computes it). (..., P) → (..., P)."""
    mean = targets.mean(dim=-1, keepdim=True)
    var = targets.var(dim=-1, keepdim=True)
    return (targets - mean) / (var + eps).sqrt()


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the masked patches only: per patch the mean over its P values, then the
    mean over the masked patches. prediction, target: (B, N, P); token_mask: (B, N) bool."""
    per_patch = (prediction.float() - target.float()).pow(2).mean(dim=-1)  # (B, N)
    weights = token_mask.to(per_patch.dtype)  # weighed, not selected: shapes that do not depend on the mask
    return (per_patch * weights).sum() / weights.sum()


def supporting(modality: str) -> list[str]:
    """The encoder types of `modality` that support token masking."""
    return sorted(kind for kind, cls in MODALITIES[modality].encoders.items() if issubclass(cls, MasksTokens))


class MaskedMediaData(TaskData):
    """The media to mask: `inputs` names one modality (image by default; {video: video} or {audio: audio}
    mask clips or sounds). Its target is made in the head's `corrupt`, so the records need only the media.
    Scored by `masked_mse`, the reconstruction error on masked patches (lower is better).

    Args:
        inputs: exactly one of image, video, audio → its record field.
    """

    inputs = {"image": "image"}

    def __init__(self, *, inputs: dict[str, str] | None = None):
        super().__init__(inputs=inputs)
        if len(self.inputs) != 1 or next(iter(self.inputs)) not in ("image", "video", "audio"):
            raise ValueError(f"inputs: masked modelling reads one of image, video, audio, got {sorted(self.inputs)}")
        self.modality = next(iter(self.inputs))

    def metrics(self, predictions: list[float], records: list[dict[str, Any]]) -> dict[str, float]:
        """`predictions`: each example's masked MSE (every example masks the same number of patches)."""
        return {"masked_mse": sum(predictions) / max(1, len(predictions))}


class MaskedMediaTask(Task):
    """Reconstruct masked patches from the encoder's own tokens (`out.modalities[m]`, before fusion).

    The encoder replaces a masked patch's embedding by its learned mask token (a CNN zeroes the cell's
    pixels); every token still goes through the encoder (SimMIM's recipe, not MAE's dropping of them),
    so the default ratio is SimMIM's 0.6. A linear head maps each patch token (D) to its P values; the
    loss is the MSE on masked patches only, against each patch's own normalised values (`norm_targets`,
    MAE's) or the raw ones. Training masks from torch's global generator; evaluation with a fixed seed.

    Args:
        data: its data side (which modality).
        encoder: the backbone's encoder of that modality (the builder gives it); it gets its mask token here.
        width: D, the encoder tokens' width.
        mask_ratio: the share of each example's patches that is masked (exactly, per example).
        norm_targets: regress per-patch normalised values (MAE) rather than raw ones.
        weight: multi-task loss weight.
    """

    data_class = MaskedMediaData
    data: MaskedMediaData
    needs_fusion = False
    corrupts = True

    def __init__(self, data: MaskedMediaData, *, encoder: nn.Module, width: int, mask_ratio: float = 0.6,
                 norm_targets: bool = True, weight: float = 1.0):
        super().__init__(data, weight=weight)
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio: expected a share between 0 and 1, got {mask_ratio!r}")
        modality = data.modality
        if not isinstance(encoder, MasksTokens):
            kind = next((k for k, cls in MODALITIES[modality].encoders.items() if isinstance(encoder, cls)),
                        type(encoder).__name__)
            raise ValueError(f"inputs: masked modelling needs a {modality} encoder that masks its tokens; "
                             f"this model's is {kind!r}, the ones that do: {', '.join(supporting(modality))}")
        encoder.enable_token_masking()
        self.encoder = Borrowed(encoder)
        self.mask_ratio, self.norm_targets = mask_ratio, norm_targets
        self.patch_start, self.num_patches = encoder.patch_start, encoder.num_patches
        self.head = nn.Linear(width, encoder.patch_dim)  # D → P, each patch token to its values

    def _masked(self, inputs: Batch, generator: torch.Generator | None) -> tuple[Batch, dict[str, torch.Tensor]]:
        modality = self.data.modality
        part = inputs[modality]
        data = part["data"]
        token_mask = random_token_mask(data.shape[0], self.num_patches, self.mask_ratio, generator, data.device)
        return {**inputs, modality: {**part, "token_mask": token_mask}}, {"data": data, "token_mask": token_mask}

    def corrupt(self, inputs: Batch, target: Any) -> tuple[Batch, dict[str, torch.Tensor]]:
        """The inputs with a `token_mask` for the modality, and {"data": the unmasked media, "token_mask"}."""
        return self._masked(inputs, None)

    def reconstruct(self, out: ModelOutput) -> torch.Tensor:
        """(B, N, P) the head's values for every patch token."""
        return self.head(out.modalities[self.data.modality].tokens[:, self.patch_start:])

    def targets(self, out: ModelOutput, data: torch.Tensor) -> torch.Tensor:
        """(B, N, P) what each patch token should reconstruct, normalised per patch with `norm_targets`."""
        targets = self.encoder.module.patch_targets(data).float()
        return normalise_patches(targets) if self.norm_targets else targets

    def forward(self, out: ModelOutput, target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        loss = masked_mse(self.reconstruct(out), self.targets(out, target["data"]), target["token_mask"])
        return {"loss": loss}

    @torch.no_grad()
    def predict(self, model: nn.Module, inputs: Batch) -> list[float]:
        """Each example's masked MSE under a fixed masking (the same batch is masked the same way every time)."""
        masked, target = self._masked(inputs, torch.Generator().manual_seed(EVAL_SEED))
        out = model.encode(masked, fuse=False)
        error = (self.reconstruct(out).float() - self.targets(out, target["data"])).pow(2).mean(dim=-1)  # (B, N)
        mask = target["token_mask"]
        return ((error * mask).sum(1) / mask.sum(1)).tolist()
