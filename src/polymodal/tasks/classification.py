"""Classification of an example into one of the training labels (docs/concepts.md#fine-tuning classification head)."""

from __future__ import annotations

from typing import Any

from ..metrics import grouped_accuracy
from .vocab_head import VocabularyData, VocabularyTask


class ClassificationData(VocabularyData):
    """`label` from the image, or from the `inputs` configured; top-1 accuracy."""

    inputs = {"image": "image"}
    required = ()  # any of its inputs will do
    target_field = "label"

    def metrics(self, predictions: list[str], records: list[dict[str, Any]]) -> dict[str, float]:
        return grouped_accuracy(predictions, [str(r["label"]) for r in records], [None] * len(records))


class ClassificationTask(VocabularyTask):
    """Predict `label` with an MLP head over the pooled vector."""

    data_class = ClassificationData
