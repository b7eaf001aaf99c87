"""Visual question answering as classification over the training answers (seed §2.4)."""

from __future__ import annotations

from typing import Any

from ..evaluation.metrics import grouped_accuracy
from .vocab_head import VocabularyTask


class VQATask(VocabularyTask):
    """Answer `question` about `image`; accuracy overall and per `question_type`."""

    inputs = {"image": "image", "text": "question"}
    target_field = "answer"

    def metrics(self, predictions: list[str], records: list[dict[str, Any]]) -> dict[str, float]:
        answers = [str(r["answer"]) for r in records]
        groups = [r.get("question_type") for r in records]
        return grouped_accuracy(predictions, answers, groups)
