"""The one output every modality encoder returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch


@dataclass
class EncoderOutput:
    """What a modality encoder hands to fusion and the joint model.

    Attributes:
        tokens: (B, N, D) token sequence, already projected to the model width D.
        mask: (B, N) bool, True for real tokens, False for padding.
        pooled: (B, D) one vector per example (CLS token or masked mean).
        times: (N,) for encoders of timed media (video, audio): when each token happens, as a fraction
            [0, 1) of the span the encoder was given, NaN for a token with no time (a CLS); None for
            untimed modalities. A joint model with `time_code` lines up tokens of different modalities
            by these times.
        present: (B,) bool, False for examples that lack this modality (their tokens are a learned
            placeholder, see `models.absent`); None when every example has it.
        codes: (B, N) long, for a quantising encoder (a modality tokenizer): each token's code; else None.
        aux_loss: a quantising encoder's own loss (a VQ codebook's commitment), to add to the task's; None
            for the others.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor
    times: torch.Tensor | None = None
    present: torch.Tensor | None = None
    codes: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None

    def presence(self) -> torch.Tensor:
        """(B,) bool: which examples have this modality (`present`, or all of them)."""
        if self.present is None:
            return torch.ones(self.mask.shape[0], dtype=torch.bool, device=self.mask.device)
        return self.present.to(torch.bool)



@runtime_checkable
class MasksTokens(Protocol):
    """An encoder that masked modelling can train: it replaces chosen patch tokens by a learned mask token
    (`token_mask` in its inputs) and says what each patch token should reconstruct. Its instances also
    have `patch_start` (the output index of the first patch token), `num_patches` and `patch_dim` (values
    per patch in `patch_targets`)."""

    def enable_token_masking(self) -> None:
        """Create the learned mask token (runs trained without masked modelling keep their state dict)."""
        ...

    def patch_targets(self, data: torch.Tensor) -> torch.Tensor:
        """(B, num_patches, patch_dim) what each patch token should reconstruct, from the collated input."""
        ...


@runtime_checkable
class HoldsEncoders(Protocol):
    """An encoder that holds another modality's encoder (a video encoder's frame encoder): the builder
    builds those from their config keys and passes them in as modules."""

    @staticmethod
    def nested_encoders() -> dict[str, tuple[str, dict[str, Any] | None]]:
        """Config key → (its modality, the spec used when the key is left out; None: no encoder)."""
        ...

    @staticmethod
    def nested_settings(key: str, **settings: Any) -> dict[str, Any]:
        """What this encoder gives the nested encoder under `key`, from its own settings."""
        ...


@runtime_checkable
class RenamesOldKeys(Protocol):
    """A module whose parameters had other names in run folders of earlier versions: loading renames them
    (its `_load_from_state_dict` calls this), and so does a warm start from such a run."""

    def rename_old_keys(self, state: dict[str, Any], prefix: str) -> None:
        """Rename, in place, the keys of `state` under `prefix` that an earlier version saved."""
        ...
