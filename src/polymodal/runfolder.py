"""The run folder's layout, in one place: its names, where a trained model is, and how weights and the
model's artifacts (tokenizer, vocabularies, teacher widths) are written and read.

    RUN/
      config.yaml            the resolved config
      metrics.jsonl          one JSON object per logged step
      checkpoints/step_N/    model.safetensors + trainer.pt (training/checkpoint.py)
      best/                  the best validation's weights (train.select)
      model/                 what `polymodal.load(RUN)` reads: config.yaml, model.safetensors,
                             tokenizer.json, vocab.json, teachers.json
      report/                the demo's and `polymodal ablate`'s reports

Weights are written to a temporary file, then renamed into place: a killed run never leaves half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import PolymodalError

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
MODEL_DIR = "model"
BEST_DIR = "best"
WEIGHTS = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
VOCAB_FILE = "vocab.json"
TEACHERS_FILE = "teachers.json"  # each distillation teacher's width: a saved student loads without its teacher

# Polymodal 0.1's joint transformer kept its joint layers beside the encoders; since fusion became a part
# (`model.fusion`), they live in the early fusion module.
ABSENT_PREFIX = "backbone.absent."
LEGACY_PREFIXES = {f"backbone.{name}": f"backbone.fusion.{name}"
                   for name in ("cls", "positions", "transformer", "readout_token", "readout")}


class Saveable(Protocol):
    """A tokenizer, as the run folder needs it."""

    def save(self, path: Path) -> None: ...


def model_folder(path: str | Path) -> Path:
    """A run folder's `model/`, or the folder itself if it is a model folder."""
    path = Path(path)
    if (path / MODEL_DIR / WEIGHTS).is_file():
        return path / MODEL_DIR
    if (path / WEIGHTS).is_file():
        return path
    raise PolymodalError(f"{path}: not a run or model folder (no {MODEL_DIR}/{WEIGHTS} or {WEIGHTS})")


def media_tokenizer_dir(modality: str) -> str:
    """The folder, inside a model folder, of the trained tokenizer its `modality` encoder was read from (a
    copy, so the run loads wherever it goes)."""
    return f"tokenizer-{modality}"


def save_artifacts(folder: Path, tokenizer: Saveable | None, vocab: dict[str, list[str]],
                   teachers: dict[str, int]) -> None:
    """Write what a model needs besides its weights: the tokenizer, each task's vocabulary, teacher widths."""
    folder.mkdir(parents=True, exist_ok=True)
    if tokenizer is not None:
        tokenizer.save(folder / TOKENIZER_FILE)
    (folder / VOCAB_FILE).write_text(json.dumps(vocab, indent=1))
    if teachers:
        (folder / TEACHERS_FILE).write_text(json.dumps(teachers, indent=1))


def read_json(path: Path) -> dict[str, Any]:
    """A JSON artifact, or {} where the folder has none (older runs have no teachers.json)."""
    return json.loads(path.read_text()) if path.is_file() else {}


def upgrade_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weights saved by an earlier version, under today's names (the same dict if nothing changed)."""
    if "backbone.cls" not in state:
        return state
    upgraded = {}
    for key, value in state.items():
        old = next((p for p in LEGACY_PREFIXES if key == p or key.startswith(p + ".")), None)
        upgraded[LEGACY_PREFIXES[old] + key[len(old):] if old else key] = value
    return upgraded


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The weights of a safetensors file, under today's names."""
    if not path.is_file():
        raise PolymodalError(f"model weights not found: {path}")
    return upgrade_state_dict(load_file(str(path)))


def save_state_dict(weights: dict[str, torch.Tensor], path: Path) -> None:
    """Weights (name → tensor) as safetensors, written to a temporary file then renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state, storages = {}, set()
    for k, v in weights.items():
        v = v.detach().contiguous().cpu()
        # tied weights (a language model's input and output embeddings) share storage, which safetensors
        # refuses: the second name gets a copy (loading the state dict ties them again)
        pointer = v.untyped_storage().data_ptr()
        state[k] = v.clone() if pointer in storages else v
        storages.add(pointer)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".safetensors")
    os.close(fd)
    try:
        save_file(state, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_weights(model: nn.Module, path: Path) -> None:
    """Load `path`'s weights into `model`, which must have exactly those (but for absent-modality
    placeholders, which runs made before they existed lack: those keep their initial values)."""
    state = read_state_dict(path)
    try:
        # not strict, then checked: modules rename the keys of older runs while loading (their
        # `_load_from_state_dict`), so what is missing is only known afterwards
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise PolymodalError(f"{path}: weights do not fit the model its config builds: {e}") from None
    missing = [k for k in result.missing_keys if not k.startswith(ABSENT_PREFIX)]
    if missing or result.unexpected_keys:
        raise PolymodalError(f"{path}: weights do not fit the model its config builds: "
                             f"missing {', '.join(missing) or 'none'}; unexpected "
                             f"{', '.join(result.unexpected_keys) or 'none'}")
