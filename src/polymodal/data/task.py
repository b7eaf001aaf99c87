"""A task on the data side: which record fields it reads, the examples and targets it builds, its metrics.

It holds no parameters, so data-loading workers get this and not the task's head (`tasks/`)."""

from __future__ import annotations

from typing import Any

import torch


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

    @property
    def plain_examples(self) -> bool:
        """Whether items are the records as given (so tasks reading the same records may share batches); a
        data side that overrides `example` only under an option says so by overriding this."""
        return type(self).example is TaskData.example

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
