"""Visual question answering as classification over the training answers (docs/concepts.md#multi-task)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch

from ..metrics import grouped_accuracy
from .vocab_head import VocabularyData, VocabularyTask


class VQAData(VocabularyData):
    """Answer `question` about `image`; accuracy overall and per `question_type`.

    Args:
        vocab: the answers seen in training, in index order.
        inputs: modality → record field (see `TaskData`).
        more_questions: a record field listing other questions about the same media, each a mapping that
            replaces the record's fields (`{"question": ..., "answer": ..., "question_type": ...}`). In
            training every example asks one of the record's own question and these, drawn at random, so
            each decoded clip or image teaches several questions (as CLEVR has ~10 per image); evaluation
            asks the record's own question. None: one question per record.
        own_question_share: with `more_questions`, how often training asks the record's own question
            (the rest drawn evenly from the others); None: every question of the record equally often.
            Raise it when the own questions are the only source of a question kind (the benchmark's
            balanced sync question).
    """

    inputs = {"image": "image", "text": "question"}
    required = ("text",)  # a question; the media may be absent
    target_field = "answer"

    def __init__(self, *, vocab: list[str], inputs: dict[str, str] | None = None, more_questions: str | None = None,
                 own_question_share: float | None = None):
        super().__init__(vocab=vocab, inputs=inputs)
        if own_question_share is not None and not 0.0 <= own_question_share <= 1.0:
            raise ValueError(f"own_question_share: expected a number from 0 to 1, got {own_question_share!r}")
        self.more_questions = more_questions
        self.own_question_share = own_question_share

    @property
    def plain_examples(self) -> bool:
        """Whether each example is its record as it is (no extra question drawn), so tasks reading the same
        fields can share its batch (`training.multitask`)."""
        return self.more_questions is None

    @classmethod
    def vocab_from(cls, records: list[dict[str, Any]], options: dict[str, Any]) -> list[str]:
        field = options.get("more_questions")
        answers = [str(r["answer"]) for r in records if "answer" in r]
        if field:
            answers += [str(q["answer"]) for r in records for q in r.get(field) or () if "answer" in q]
        counts = Counter(answers)
        return sorted(counts, key=lambda v: (-counts[v], v))

    def example(self, records: list[dict[str, Any]], index: int,
                generator: torch.Generator | None) -> tuple[dict[str, Any], Any]:
        record = records[index]
        more = record.get(self.more_questions) if self.more_questions and generator is not None else None
        if more:
            if self.own_question_share is None:
                pick = int(torch.randint(0, len(more) + 1, (), generator=generator))  # len(more): the own one
            elif torch.rand((), generator=generator) < self.own_question_share:
                pick = len(more)
            else:
                pick = int(torch.randint(0, len(more), (), generator=generator))
            if pick < len(more):
                record = {**record, **more[pick]}
        return record, self.target(record)

    def metrics(self, predictions: list[str], records: list[dict[str, Any]]) -> dict[str, float]:
        answers = [str(r["answer"]) for r in records]
        groups = [r.get("question_type") for r in records]
        return grouped_accuracy(predictions, answers, groups)


class VQATask(VocabularyTask):
    """Classify the answer with an MLP head over the fused vector."""

    data_class = VQAData
