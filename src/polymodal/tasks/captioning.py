"""Captioning (seed §2.4): describe an image, a clip or a sound in words; and transcription, the same
with a word error rate."""

from __future__ import annotations

from typing import Any

from ..evaluation.metrics import caption_scores, word_error_rate
from .generative import TextGenerationTask, TextTargetData


class CaptionData(TextTargetData):
    """Generate `text` from the media (by default an image; `inputs: {video: video}` or `{audio: audio}`
    captions clips or sounds). Scored by BLEU-4, CIDEr and exact match."""

    inputs = {"image": "image"}
    target_field = "text"

    def metrics(self, predictions: list[str], records: list[dict[str, Any]]) -> dict[str, float]:
        return caption_scores(predictions, [self.references(r) for r in records])


class CaptionTask(TextGenerationTask):
    data_class = CaptionData


class TranscriptionData(TextTargetData):
    """Generate `text` from `audio` (speech to words, or audio captioning); scored by word error rate,
    with BLEU-4, CIDEr and exact match beside it."""

    inputs = {"audio": "audio"}
    target_field = "text"

    def metrics(self, predictions: list[str], records: list[dict[str, Any]]) -> dict[str, float]:
        references = [self.references(r) for r in records]
        return {"wer": word_error_rate(predictions, [r[0] for r in references]),
                **caption_scores(predictions, references)}


class TranscriptionTask(TextGenerationTask):
    data_class = TranscriptionData
