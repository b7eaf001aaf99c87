"""What a config builds and a run folder stores: the backbone with one head per task (`MultitaskModel`),
and with it the processors, tokenizer and vocabularies that turn records into its inputs (`System`).

Names, one per concept:
- `Backbone` (`models/backbone.py`): encoders → shared embedding space → fusion (→ decoder);
- `MultitaskModel`: the backbone plus a head per task; one `forward` gives every task's loss;
- `System`: that model with its processors, tokenizer, vocabularies and teacher widths;
- `LoadedModel` (`api.py`): a trained `System` behind the methods users call (`answer`, `embed`, ...).
"""

from __future__ import annotations

import shutil

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .data.processor import Processor
from .models.output import ModelOutput
from .modalities.text.tokenizer import TextTokenizer
from .runfolder import media_tokenizer_dir, save_artifacts
from .tasks import Task

Batch = dict[str, Any]  # {"inputs": modality → tensors, "target": ..., "group": name of the batch it shares}


class MultitaskModel(nn.Module):
    """A backbone plus one head per task; one `forward` computes every task's loss (one DDP call).

    Args:
        backbone: the joint model (`models.Backbone`).
        tasks: task name → its head.
    """

    def __init__(self, backbone: nn.Module, tasks: dict[str, Task]):
        super().__init__()
        self.backbone = backbone
        self.tasks = nn.ModuleDict(tasks)

    def encode(self, inputs: dict[str, dict[str, torch.Tensor]], fuse: bool = True) -> ModelOutput:
        return self.backbone(inputs, fuse=fuse)

    def forward(self, batches: dict[str, Batch]) -> dict[str, dict[str, torch.Tensor]]:
        """Args: task name → collated batch. Returns: task name → {"loss": scalar, ...}.

        Tasks whose batches name the same `group` (the trainer gives one batch to tasks that read the same
        records and fields) share one backbone pass, unless a task changes its inputs first (`corrupts`:
        masked modelling sees masked inputs). A batch without a group is its task's alone."""
        groups = {name: batch.get("group", name) for name, batch in batches.items()}
        fuse: dict[str, bool] = {}
        for name, group in groups.items():
            if not self.tasks[name].corrupts:
                fuse[group] = fuse.get(group, False) or self.tasks[name].needs_fusion
        shared: dict[str, ModelOutput] = {}
        results = {}
        for name, batch in batches.items():
            task = self.tasks[name]
            if task.corrupts:
                inputs, target = task.corrupt(batch["inputs"], batch["target"])
                results[name] = task(self.backbone(inputs, fuse=task.needs_fusion), target)
                continue
            group = groups[name]
            if group not in shared:
                shared[group] = self.backbone(batch["inputs"], fuse=fuse[group])
            results[name] = task(shared[group], batch["target"])
        return results


@dataclass
class System:
    """Everything a config builds: the model, its processors and its learnt vocabularies."""

    model: MultitaskModel
    processors: dict[str, Processor]
    tokenizer: TextTokenizer | None
    vocab: dict[str, list[str]]
    teachers: dict[str, int] = field(default_factory=dict)

    def save_artifacts(self, folder: Path) -> None:
        """Write the tokenizer, vocabularies and teacher widths that `build.load_system` reads back."""
        save_artifacts(folder, self.tokenizer, self.vocab, self.teachers)
        for name, encoder in self.model.backbone.encoders.items():  # a trained tokenizer: a copy of its run
            source = getattr(encoder, "source", None)
            if source is not None and Path(source).resolve() != (folder / media_tokenizer_dir(name)).resolve():
                shutil.copytree(source, folder / media_tokenizer_dir(name), dirs_exist_ok=True)
