"""A distillation task's frozen teacher, from `tasks.NAME.teacher`: a pretrained encoder from a local
Hugging Face folder, or a trained Polymodal run (read with the loader the builder hands over)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..config import bind
from ..errors import ConfigError
from ..models.teacher import LazyProcessor, Teacher, hf_teacher
from ..modalities.pretrained import resolve_model_path
from ..modalities.registry import make_processor, with_defaults
from ..modalities.text.tokenizer import TextTokenizer
from ..system import System
from ..tasks.vocab_head import VocabularyTask
from .encoders import modality as get_modality
from .errors import config_errors

LoadSystem = Callable[[str | Path], System]  # a run or model folder → its trained system


def build_teacher(spec: Any, modality: str, target: str, where: str, dim: int | None,
                  load: LoadSystem) -> Teacher:
    """The frozen teacher `spec` describes: `{type: hf, path: DIR, ...}` (a pretrained encoder of `modality`
    and its settings) or `{run: RUN_FOLDER}` (a trained Polymodal model, read by `load`). `dim`: its width
    as a saved run recorded it; the teacher's files are then read only when it first runs."""
    if not isinstance(spec, dict) or ("run" in spec) == ("type" in spec):
        raise ConfigError(f"{where}: expected {{type: hf, path: DIR}} (a pretrained encoder) or {{run: RUN}} "
                          f"(a trained Polymodal model), got {spec!r}")
    with config_errors(where):
        if "run" in spec:
            if set(spec) != {"run"}:
                raise ConfigError(f"{where}: a run teacher takes only 'run', got {', '.join(sorted(spec))}")
            return run_teacher(modality, spec["run"], target, load, dim)
        encoders = get_modality(modality, where).encoders
        if spec["type"] != "hf" or "hf" not in encoders:
            raise ConfigError(f"{where}.type: a teacher is a pretrained encoder (type: hf) or a run; "
                              f"got {spec['type']!r}")
        cls = encoders["hf"]
        settings = bind(cls, {k: v for k, v in spec.items() if k != "type"}, where, provided=("out_dim", "lora"))

        def processor(values: dict[str, Any]) -> Any:
            tokenizer = TextTokenizer.from_hf(resolve_model_path(values["path"])) if modality == "text" else None
            return make_processor(get_modality(modality, where), cls, with_defaults(cls, values), False, tokenizer)

        return hf_teacher(modality, cls, settings, target, processor, dim)


def run_teacher(modality: str, folder: str | Path, target: str, load: LoadSystem, dim: int | None = None) -> Teacher:
    """A trained Polymodal run as the teacher: its shared-space embedding of `modality` (or, without an
    embedding space, its encoder's pooled vector); `logits` from its one classification task.
    `dim`: its width as a saved student recorded it (the run is then read only when first used)."""
    if dim is not None:
        box: list[Teacher] = []

        def real() -> Teacher:
            if not box:
                box.append(run_teacher(modality, folder, target, load))
            return box[0]

        return Teacher(lambda: real()._load(), LazyProcessor(lambda: real().processor), dim,
                       lambda module, batch: real()._run(module, batch), str(folder), lambda: Path(folder).exists())
    system = load(folder)
    if modality not in system.processors:
        raise ValueError(f"run: the run at {folder} has no {modality} encoder; it has: "
                         f"{', '.join(sorted(system.processors))}")
    backbone = system.model.backbone
    if target == "logits":
        heads = [t for t in system.model.tasks.values() if isinstance(t, VocabularyTask)]
        if len(heads) != 1:
            raise ValueError(f"the run at {folder} has {len(heads)} classification tasks; a teacher of "
                             f"logits (target: logits) needs exactly one")
        head = heads[0]

        def run_logits(module: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            return head.head(module.backbone({modality: batch}).pooled)

        return Teacher(lambda: system.model, system.processors[modality], len(head.data.vocab), run_logits, str(folder))
    embeds = backbone.embed_dim is not None

    def run_embedding(module: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = module({modality: batch}, fuse=False)
        return out.embeddings[modality] if embeds else out.modalities[modality].pooled

    return Teacher(lambda: backbone, system.processors[modality], backbone.embed_dim or backbone.width,
                   run_embedding, str(folder))
