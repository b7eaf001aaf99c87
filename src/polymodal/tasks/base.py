"""What every task is, in two parts: its data side (`TaskData`, in `data/task.py`: which record fields it
reads, the examples and targets it builds, its metrics) and its head (`Task`: a module with a loss and
predictions)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..data.task import TaskData
from ..models.output import ModelOutput


def head_scores(head: nn.Module, out: ModelOutput) -> torch.Tensor:
    """`head` applied to the fused vector, or under score-level fusion to each modality's vector, the
    results averaged over the modalities each example has. Returns (B, ...) what `head` returns."""
    if not out.scored:
        return head(out.pooled)
    names = sorted(out.scored)
    scores = torch.stack([head(out.scored[m]) for m in names])  # (M, B, ...)
    weights = torch.stack([out.score_weights[m] for m in names]).to(scores.dtype)  # (M, B)
    weights = weights.reshape(*weights.shape, *([1] * (scores.dim() - 2)))
    return (weights * scores).sum(0) / weights.sum(0).clamp(min=1)


class Borrowed:
    """A part of the backbone (its decoder, fusion or an encoder) that a head uses without owning it: it is
    not registered as the head's submodule, so its weights stay once in the state dict, under `backbone.`.

    Args:
        module: the backbone's part, handed to the head's constructor by the builder.
    """

    def __init__(self, module: nn.Module):
        self.module = module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)


class Task(nn.Module):
    """A task's head and loss over a model's output, and its predictions (docs/concepts.md#multi-task,
    #finetune-heads). What it reads from records and how it is scored is its data side, `self.data`.

    Subclasses set `data_class` (the `TaskData` their configs build) and implement `forward` (the loss)
    and `predict_output`, or `predict` for a prediction that loops over the model. A head that needs a
    part of the backbone (its `decoder`, its `fusion`, the `encoder` of its input) names it as a keyword
    of its constructor; the builder hands it over (keep it as a `Borrowed`).

    Args:
        data: the task's data side.
        weight: this task's weight in the summed multi-task loss.
    """

    data_class: type[TaskData] = TaskData
    needs_fusion = True  # False: the task reads only the per-modality outputs; the fusion is skipped for it
    needs: tuple[str, ...] = ("pooled",)  # what the model must provide (see builders.tasks.NEEDS)
    corrupts = False  # True: `corrupt` changes the inputs before the model sees them (masked modelling)

    def __init__(self, data: TaskData, *, weight: float = 1.0):
        super().__init__()
        if not isinstance(data, self.data_class):
            raise TypeError(f"{type(self).__name__} takes a {self.data_class.__name__}, got {type(data).__name__}")
        self.data = data
        self.weight = weight

    def corrupt(self, inputs: dict[str, dict[str, torch.Tensor]], target: Any) -> tuple[dict[str, dict[str, torch.Tensor]], Any]:
        """A training batch as this task's model pass sees it, and its target: masked modelling masks
        tokens or patches here and returns what to reconstruct. Only called when `corrupts` is True; it
        must not change `inputs` in place (other tasks may read the same batch). Randomness comes from
        torch's global generator, which checkpoints save, so a resumed run masks as an unbroken one."""
        return inputs, target

    def frozen_target(self, target: Any) -> Any:
        """The target with what frozen models compute from it (distillation: its teacher's vectors). The
        trainer calls this before the model's forward, so a compiled step never traces a frozen model."""
        return target

    def forward(self, out: ModelOutput, target: Any) -> dict[str, torch.Tensor]:
        """Returns at least {"loss": scalar}."""
        raise NotImplementedError

    def predict(self, model: nn.Module, inputs: dict[str, dict[str, torch.Tensor]]) -> list[Any]:
        """One prediction per example of a collated batch's `inputs`, from `model` (a `MultitaskModel`).

        The default encodes once and reads the output (`predict_output`); a task whose prediction is a
        loop over the model (generating text token by token, ragged targets) overrides this.
        """
        return self.predict_output(model.encode(inputs, fuse=self.needs_fusion))

    def predict_batch(self, model: nn.Module, inputs: dict[str, dict[str, torch.Tensor]], target: Any) -> list[Any]:
        """What the evaluation harness calls on each collated batch: `predict`, by default, which sees the
        inputs alone. A task whose prediction needs part of what it collates as the target overrides this:
        a generative task continues each example's prompt, distillation compares with its teacher's view."""
        return self.predict(model, inputs)

    def predict_output(self, out: ModelOutput) -> list[Any]:
        """One prediction per example (an answer, a label, an embedding) from one model output."""
        raise NotImplementedError
