"""What every task is, in two parts: its data side (`TaskData`: which record fields it reads, the
examples and targets it builds, its metrics) and its head (`Task`: a module with a loss and predictions)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

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


class TaskData:
    """A task on the data side: which record fields feed which modality, the example and target each
    record gives, how targets collate into a batch, and the metrics of predictions against records.

    It holds no parameters, so data-loading workers get this and not the head. Subclasses set the
    default `inputs` and `target_field`, and override `target` and `metrics` (and `example` to build
    their own examples, `collate_targets` for targets that are not one number each).

    Args:
        inputs: modality → record field, replacing the default: e.g. {video: video, text: question}
            asks VQA questions about videos, {audio: audio} classifies sounds.
    """

    inputs: dict[str, str] = {}
    required: tuple[str, ...] | None = None  # modalities a record cannot lack; None: every one of `inputs`
    target_field: str | None = None
    tokenizer_of = "decoder"  # a data side that takes a `tokenizer` gets the decoder's (the text it generates)
    # or, with "encoder", the text encoder's (the text it reads: masked language modelling)

    def __init__(self, *, inputs: dict[str, str] | None = None):
        if inputs is not None:
            if not inputs or not all(isinstance(k, str) and isinstance(v, str) for k, v in inputs.items()):
                raise ValueError(f"inputs: expected a mapping of modality → record field, got {inputs!r}")
            self.inputs = dict(inputs)

    @property
    def required_modalities(self) -> tuple[str, ...]:
        """The inputs an example cannot do without; the others may be absent (a learned placeholder)."""
        return tuple(self.inputs) if self.required is None else tuple(m for m in self.inputs if m in self.required)

    @property
    def fields(self) -> tuple[str, ...]:
        """Record fields a record needs to be used by this task (besides at least one of its inputs)."""
        extra = (self.target_field,) if self.target_field else ()
        return tuple(dict.fromkeys([*(self.inputs[m] for m in self.required_modalities), *extra]))

    def usable(self, record: dict[str, Any]) -> bool:
        """Whether `record` can be an example: it has the required fields and at least one input."""
        return all(f in record for f in self.fields) and any(f in record for f in self.inputs.values())

    @classmethod
    def vocab_from(cls, records: list[dict[str, Any]], options: dict[str, Any]) -> list[str] | None:
        """A vocabulary learnt from the training records (answers, labels), or None. `options`: the
        task's data-side settings, as the constructor takes them."""
        return None

    def example(self, records: list[dict[str, Any]], index: int,
                generator: torch.Generator | None) -> tuple[dict[str, Any], Any]:
        """The record whose fields feed the model for item `index`, and its target.

        Most tasks use the record as it is; a task that builds its own examples (matching pairs a record
        with another one's audio) overrides this. `generator` is None in evaluation: deterministic.
        """
        return records[index], self.target(records[index])

    def target(self, record: dict[str, Any]) -> Any:
        """The training target of one record."""
        return 0

    def collate_targets(self, targets: list[Any]) -> Any:
        """A batch's targets, as the head's loss takes them: one number each by default."""
        return torch.as_tensor(targets)

    def metrics(self, predictions: list[Any], records: list[dict[str, Any]]) -> dict[str, float]:
        """Standard metrics of `predictions` against the records they came from."""
        raise NotImplementedError


class Task(nn.Module):
    """A task's head and loss over a model's output, and its predictions (seed §2.4, §3.2 "task head
    design"). What it reads from records and how it is scored is its data side, `self.data`.

    Subclasses set `data_class` (the `TaskData` their configs build) and implement `forward` (the loss)
    and `predict_output`, or `predict` for a prediction that loops over the model.

    Args:
        data: the task's data side.
        weight: this task's weight in the summed multi-task loss.
    """

    data_class: type[TaskData] = TaskData
    fused = True  # False: the task reads only the per-modality embeddings; joint layers are skipped for it
    needs: tuple[str, ...] = ("pooled",)  # what the model must provide (see build.NEEDS)
    corrupts = False  # True: `corrupt` changes the inputs before the model sees them (masked modelling)

    def __init__(self, data: TaskData, *, weight: float = 1.0):
        super().__init__()
        if not isinstance(data, self.data_class):
            raise TypeError(f"{type(self).__name__} takes a {self.data_class.__name__}, got {type(data).__name__}")
        self.data = data
        self.weight = weight

    def attach(self, backbone: nn.Module) -> None:
        """Called once by the builder with the model this head sits on (a `MultimodalModel`), for a head
        whose shape depends on an encoder's (masked modelling: how many values a patch has) or that needs
        an encoder to provide something (its mask token). Raises ValueError where the model cannot serve
        this task. It must not keep a reference to `backbone` or its modules (they would be registered
        twice); the default does nothing."""

    def corrupt(self, inputs: dict[str, dict[str, torch.Tensor]], target: Any) -> tuple[dict[str, dict[str, torch.Tensor]], Any]:
        """A training batch as this task's model pass sees it, and its target: masked modelling masks
        tokens or patches here and returns what to reconstruct. Only called when `corrupts` is True; it
        must not change `inputs` in place (other tasks may read the same batch). Randomness comes from
        torch's global generator, which checkpoints save, so a resumed run masks as an unbroken one."""
        return inputs, target

    def forward(self, out: ModelOutput, target: Any) -> dict[str, torch.Tensor]:
        """Returns at least {"loss": scalar}."""
        raise NotImplementedError

    def predict(self, model: nn.Module, inputs: dict[str, dict[str, torch.Tensor]]) -> list[Any]:
        """One prediction per example of a collated batch's `inputs`, from `model` (a `PolymodalModel`).

        The default encodes once and reads the output (`predict_output`); a task whose prediction is a
        loop over the model (generating text token by token, ragged targets) overrides this.
        """
        return self.predict_output(model.encode(inputs, fuse=self.fused))

    def predict_batch(self, model: nn.Module, inputs: dict[str, dict[str, torch.Tensor]], target: Any) -> list[Any]:
        """What the evaluation harness calls on each collated batch: `predict`, by default, which sees the
        inputs alone. A task whose prediction needs part of what it collates as the target overrides this:
        a generative task continues each example's prompt, distillation compares with its teacher's view."""
        return self.predict(model, inputs)

    def predict_output(self, out: ModelOutput) -> list[Any]:
        """One prediction per example (an answer, a label, an embedding) from one model output."""
        raise NotImplementedError
