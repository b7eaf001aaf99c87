"""A frozen teacher for distillation (docs/concepts.md#pre-training "knowledge distillation from pretrained unimodal
encoders"): a pretrained Hugging Face encoder from a local folder, or a trained Polymodal run.

A teacher is used only in training and evaluation of the distillation task: it is loaded the first time it
runs, is never part of the student's weights (a saved or served student does not carry or need it) and
never trains. Its inputs come through its own processor (its tokenizer or image processor), so a student
with another tokenizer learns from it all the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

TARGETS = ("embedding", "logits")


class LazyProcessor:
    """A processor made the first time it is used: a served student never reads its teacher's files."""

    def __init__(self, make: Callable[[], Any]):
        self._make, self._processor = make, None

    def _get(self) -> Any:
        if self._processor is None:
            self._processor = self._make()
        return self._processor

    def prepare(self, value: Any, generator: torch.Generator | None) -> Any:
        return self._get().prepare(value, generator)

    def collate(self, items: list[Any]) -> dict[str, torch.Tensor]:
        return self._get().collate(items)

    def __getstate__(self) -> dict[str, Any]:
        """What a loader worker receives: the processor itself, and whether the teacher was there."""
        ready = bool(getattr(self, "available", lambda: True)())
        return {"_make": None, "_processor": self._get() if ready else None, "ready": ready}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._make, self._processor = state["_make"], state["_processor"]
        ready = state["ready"]
        self.available = lambda: ready


class Teacher:
    """What a distillation task needs of its teacher: its processor, the width of its vectors, and the
    vectors themselves.

    Args:
        load: builds the teacher module (called once, at first use).
        processor: turns record values into the teacher's batch (`prepare`, `collate`); it may be lazy.
        dim: the width of what the teacher gives: its embedding width, or its number of classes.
        run: (module, batch) → (B, dim), the teacher's embeddings or logits for a collated batch.
        name: how the teacher is named in messages.
        available: whether the teacher's files are there (a served student's teacher may be gone).
    """

    def __init__(self, load: Callable[[], nn.Module], processor: Any, dim: int,
                 run: Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor], name: str,
                 available: Callable[[], bool] = lambda: True):
        self._load, self.processor, self.dim, self._run, self.name = load, processor, dim, run, name
        self.available = available
        if isinstance(processor, LazyProcessor):  # the data side asks it whether the teacher is there
            processor.available = available
        self._module: nn.Module | None = None
        self._cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, batch: dict[str, torch.Tensor], keys: list[str] | None = None) -> torch.Tensor:
        """(B, dim) float32 for a batch the teacher's processor collated.

        `keys` name each example's input (its text or file): the teacher sees unaugmented inputs and never
        changes, so each input's vector is computed once and kept (dim × 4 bytes each); from the second
        epoch on, distillation costs the student's passes only."""
        device = next(v for v in batch.values() if isinstance(v, torch.Tensor)).device
        if keys is not None and all(k in self._cache for k in keys):
            return torch.stack([self._cache[k] for k in keys]).to(device)
        if self._module is None:
            self._module = self._load().eval().requires_grad_(False)
        self._module.to(device)
        vectors = self._run(self._module, batch).float()
        for key, vector in zip(keys or (), vectors.cpu()):
            self._cache[key] = vector
        return vectors


def _hf_classifier(modality: str, folder: Path) -> nn.Module:
    import transformers

    classes = {"text": transformers.AutoModelForSequenceClassification,
               "image": transformers.AutoModelForImageClassification,
               "audio": transformers.AutoModelForAudioClassification}
    if modality not in classes:
        raise ValueError(f"no Hugging Face classifier gives logits (target: logits) for the {modality} modality")
    try:
        return classes[modality].from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError) as error:
        raise ValueError(f"teacher.path: cannot load a {modality} classifier from {folder}: {error}") from None


def _hf_dim(folder: Path, modality: str, target: str) -> int:
    """The width of a HF teacher's embeddings (its hidden size) or logits (its number of labels)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    if target == "logits":
        labels = int(getattr(config, "num_labels", 0) or 0)
        if labels < 2:
            raise ValueError(f"the teacher at {folder} has no classifier head (num_labels) to give logits (target: logits)")
        return labels
    probe = getattr(config, "text_config" if modality == "text" else "vision_config", None) or config
    return next((int(getattr(probe, k)) for k in ("hidden_size", "d_model") if isinstance(getattr(probe, k, None), int)),
                None) or int(getattr(probe, "hidden_sizes", [0])[-1])


def _folder_exists(path: str) -> Callable[[], bool]:
    """Whether the teacher's folder is there; asked for every record a task filters, so a folder once
    found is not looked up again."""
    found = False

    def available() -> bool:
        nonlocal found
        from ..modalities.pretrained import resolve_model_path

        if not found:
            try:
                resolve_model_path(path)
                found = True
            except ValueError:
                pass
        return found
    return available


def hf_teacher(modality: str, encoder_cls: type, settings: dict[str, Any], target: str,
               make_processor: Callable[[dict[str, Any]], Any], dim: int | None = None) -> Teacher:
    """A teacher from a local HF folder: `encoder_cls` (the modality's `hf` encoder) at its own width for
    embeddings, or the folder's classification model for logits.

    Args:
        settings: the encoder's settings (`path` and its own keys: `pooling`, `max_length`, ...).
        make_processor: settings → the processor that feeds this encoder.
        dim: its width as a saved run recorded it; None reads it from the folder now.
    """
    from ..modalities.pretrained import resolve_model_path

    path = settings["path"]
    if dim is None:
        dim = _hf_dim(resolve_model_path(path), modality, target)
    processor = LazyProcessor(lambda: make_processor(settings))
    available = _folder_exists(path)
    if target == "logits":
        labels = dim

        def run_logits(module: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            data = batch["data"]
            if modality == "text":
                return module(input_ids=data, attention_mask=batch["mask"].long()).logits
            name = "pixel_values" if modality == "image" else ("input_features" if data.dim() == 3 else "input_values")
            return module(**{name: data}).logits

        return Teacher(lambda: _hf_classifier(modality, resolve_model_path(path)), processor, labels, run_logits,
                       str(path), available)

    def run_embedding(module: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        extra = {k: v for k, v in batch.items() if k not in ("data", "present")}
        return module(batch["data"], **extra).pooled

    return Teacher(lambda: encoder_cls(**settings, out_dim=None), processor, dim, run_embedding, str(path), available)
