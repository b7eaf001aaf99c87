"""Generated-text tasks (docs/concepts.md#multi-task): captioning (describe an image, a clip or a sound), transcription
(the same scored by word error rate) and generative VQA (free-text answers)."""

from __future__ import annotations

from typing import Any

from ..metrics import caption_scores, grouped_accuracy, normalise_text, word_error_rate
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


class GenerativeVQAData(TextTargetData):
    """Answer `question` about the media in free text (docs/concepts.md#multi-task): accuracy by exact match after
    normalisation (case, punctuation, spaces), overall and per `question_type`.

    By default the question goes through the text encoder into the model's memory, beside the image; a
    decoder-only model can read it in its prompt instead: `inputs: {image: image}, prompt: "<image> {question}"`.
    """

    inputs = {"image": "image", "text": "question"}
    required = ("text",)
    target_field = "answer"

    def metrics(self, predictions: list[str], records: list[dict[str, Any]]) -> dict[str, float]:
        return grouped_accuracy([normalise_text(p) for p in predictions],
                                [normalise_text(str(r[self.target_field])) for r in records],
                                [r.get("question_type") for r in records])


class GenerativeVQATask(TextGenerationTask):
    data_class = GenerativeVQAData
