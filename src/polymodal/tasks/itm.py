"""Image–text matching with hard negatives (ALBEF, BLIP): does this text describe this image? Trained on
the batch's true pairs and, for each, the most confusable wrong partner the contrastive space suggests."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..modalities.base import EncoderOutput
from ..models.output import ModelOutput
from .base import Borrowed, head_scores
from .matching import MatchingData, MatchingTask


def sample_hard_negatives(similarity: torch.Tensor, same: torch.Tensor,
                          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """For every row i, a column j drawn with probability softmax(similarity[i]) over the columns it may
    take (not `same[i, j]`): a likely-looking but wrong partner.

    Args:
        similarity: (B, C) scores of row i against candidate j (e.g. t · image_i · text_j).
        same: (B, C) bool, True where j is no negative for i (itself, or an equal caption).
        generator: the random source; None: torch's global one.

    Returns:
        index: (B,) long, the drawn column of each row (0 for a row without any candidate).
        valid: (B,) bool, whether the row had a candidate at all.
    """
    valid = (~same).any(dim=1)  # (B,)
    logits = similarity.float().masked_fill(same, float("-inf"))
    logits = torch.where(valid[:, None], logits, torch.zeros_like(logits))  # a row with none: anything, unused
    # drawn on the CPU: from torch's global CPU generator, which checkpoints save, on any device
    index = torch.multinomial(logits.softmax(dim=1).cpu(), 1, generator=generator).squeeze(1).to(similarity.device)
    return torch.where(valid, index, torch.zeros_like(index)), valid


def take(out: EncoderOutput, index: torch.Tensor) -> EncoderOutput:
    """The examples `index` (K,) of an encoder output, in that order."""
    return EncoderOutput(tokens=out.tokens[index], mask=out.mask[index], pooled=out.pooled[index], times=out.times,
                         present=None if out.present is None else out.present[index])


def roc_auc(scores: list[float], truth: list[bool]) -> float:
    """The chance that a random true pair scores above a random false one (ties count half); NaN
    without both kinds."""
    pos = [s for s, t in zip(scores, truth) if t]
    neg = [s for s, t in zip(scores, truth) if not t]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


class ITMData(MatchingData):
    """Image–text pairs (`inputs`, default {image: image, text: text}; the second one is the text).

    Training examples are all true pairs (the head makes the negatives from the batch); the target is
    the example's caption (`caption_field`, default the text field), which collates to (B,) ids, equal
    for equal captions: those are never each other's negatives. Evaluation pairs are MatchingData's
    fixed, balanced ones (odd items take the text of the record half the set away); scored by accuracy
    at 0.5 and ROC AUC.

    Args:
        inputs: exactly two modalities → record fields; the second is the one swapped.
        caption_field: the record field that says which texts are the same caption; None: the text field.
    """

    inputs = {"image": "image", "text": "text"}

    def __init__(self, *, inputs: dict[str, str] | None = None, caption_field: str | None = None):
        super().__init__(inputs=inputs)
        self.first, self.second = self.inputs
        self.caption_field = caption_field or self.swapped

    def example(self, records: list[dict[str, Any]], index: int,
                generator: torch.Generator | None) -> tuple[dict[str, Any], str]:
        record = super().example(records, index, None)[0] if generator is None else records[index]
        return record, self.target(record)

    def target(self, record: dict[str, Any]) -> str:
        return str(record.get(self.caption_field))

    def collate_targets(self, targets: list[str]) -> torch.Tensor:
        """(B,) long: one id per distinct caption, in order of first appearance."""
        ids: dict[str, int] = {}
        return torch.tensor([ids.setdefault(t, len(ids)) for t in targets])

    def metrics(self, predictions: list[float], records: list[dict[str, Any]]) -> dict[str, float]:
        truth = [self._partner(records, i, None) is None for i in range(len(records))]
        return {**super().metrics(predictions, records), "auc": roc_auc(predictions, truth)}


class ITMTask(MatchingTask):
    """A match logit on the fused vector of each true pair and of two hard negatives per pair.

    For each image a wrong text is drawn with probability ∝ softmax of its contrastive similarities
    (t · image · text over the batch's texts, without its own caption and equal ones), and for each text
    a wrong image likewise; the model's fusion (`fusion`) runs again on (image, drawn text) and
    (drawn image, text). The loss is binary cross entropy over the B positives and the (up to) 2B
    negatives, averaged over all of them. Negatives come from this process's batch only.

    Args:
        data: its data side.
        fusion: the backbone's fusion (the builder gives it).
        width: D, the pooled vector width.
        hidden: MLP hidden width.
        weight: multi-task loss weight.
    """

    data_class = ITMData
    data: ITMData
    needs = ("pooled", "embeddings")

    def __init__(self, data: ITMData, *, fusion: nn.Module, width: int, hidden: int = 128, weight: float = 1.0):
        super().__init__(data, width=width, hidden=hidden, weight=weight)
        self.fusion = Borrowed(fusion)

    def negatives(self, out: ModelOutput, captions: torch.Tensor,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """(negative text of each image, its validity, negative image of each text, its validity), each (B,)."""
        first, second = self.data.first, self.data.second
        with torch.no_grad():
            similarity = out.logit_scale * out.embeddings[first].float() @ out.embeddings[second].float().T  # (B, B)
        same = captions[:, None] == captions[None, :]  # (B, B), the diagonal included
        text_of, text_ok = sample_hard_negatives(similarity, same, generator)
        image_of, image_ok = sample_hard_negatives(similarity.T, same.T, generator)
        return text_of, text_ok, image_of, image_ok

    def forward(self, out: ModelOutput, target: torch.Tensor) -> dict[str, torch.Tensor]:
        first, second = self.data.first, self.data.second
        text_of, text_ok, image_of, image_ok = self.negatives(out, target.to(out.pooled.device))
        rows = torch.arange(len(target), device=out.pooled.device)
        swapped = {m: take(o, torch.cat([rows, rows])) for m, o in out.modalities.items()}  # any others: as they are
        swapped[first] = take(out.modalities[first], torch.cat([rows, image_of]))  # (2B, ...)
        swapped[second] = take(out.modalities[second], torch.cat([text_of, rows]))
        fused = self.fusion(swapped)  # first half: (image, wrong text); second half: (wrong image, text)
        negative = head_scores(self.head, ModelOutput(modalities=swapped, pooled=fused.pooled, scored=fused.scored,
                                                      score_weights=fused.score_weights)).squeeze(-1)  # (2B,)
        positive = head_scores(self.head, out).squeeze(-1)  # (B,)
        logits = torch.cat([positive, negative]).float()  # (3B,)
        labels = torch.cat([torch.ones_like(positive), torch.zeros_like(negative)]).float()
        # a row without a valid negative (every other caption the same) weighs nothing: weighed rather than
        # selected, so shapes do not depend on the draw (torch.compile keeps one graph)
        valid = torch.cat([torch.ones_like(positive, dtype=torch.bool), text_ok, image_ok]).float()
        losses = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        return {"loss": (losses * valid).sum() / valid.sum(), "logits": logits}
