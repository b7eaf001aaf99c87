"""Masked language modelling (BERT): hide some of a text's tokens and predict them from the rest."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..models.output import ModelOutput
from ..modalities.text.tokenizer import TextTokenizer
from .base import Task, TaskData

IGNORE = -100  # a label the loss skips: every position that was not chosen
BERT_SPLIT = (0.8, 0.1)  # of the chosen tokens: the share made [MASK], the share made a random token (the rest stay)
EVAL_SEED = 0  # evaluation masks with a generator seeded by this, so its metrics are reproducible
Batch = dict[str, dict[str, torch.Tensor]]  # modality → its collated inputs ("data", "mask", ...)


def mask_tokens(ids: torch.Tensor, mask: torch.Tensor, *, special: Sequence[int] | torch.Tensor, mask_id: int,
                vocab_size: int,
                ratio: float = 0.15, replace: tuple[float, float] = BERT_SPLIT,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's corruption of a padded batch of token ids.

    Per sequence, round(`ratio` · n) of its n real, non-special tokens are chosen (at least one where it
    has any; never a special token or padding); of those, `replace[0]` become [MASK], `replace[1]` a
    random non-special token, and the rest stay as they are.

    Args:
        ids: (B, L) long token ids.
        mask: (B, L) bool, True on real tokens.
        special: ids that are never chosen nor drawn as random tokens ([CLS], [SEP], [PAD], [MASK]).
        mask_id: the [MASK] id.
        vocab_size: ids are drawn from [0, vocab_size) minus `special`.
        ratio: the share of a sequence's candidate tokens that is chosen.
        replace: the chances that a chosen token becomes [MASK], or a random token.
        generator: the random source; None: torch's global one.

    Returns:
        corrupted: (B, L) the ids the model reads.
        labels: (B, L) the original id at chosen positions, `IGNORE` elsewhere.
    """
    special = [int(i) for i in special]  # Python ints: what follows from them is fixed, even under compile
    candidate = mask & ~torch.isin(ids, torch.tensor(special, dtype=ids.dtype, device=ids.device))  # (B, L)
    count = candidate.sum(dim=1, keepdim=True)  # (B, 1)
    chosen_per_row = torch.where(count > 0, (ratio * count.float()).round().clamp(min=1), 0)  # (B, 1)
    noise = torch.rand(ids.shape, generator=generator).to(ids.device)
    noise = noise.masked_fill(~candidate, 2.0)  # non-candidates sort last
    rank = noise.argsort(dim=1).argsort(dim=1)  # (B, L): each position's place in the random order
    chosen = rank < chosen_per_row  # exactly chosen_per_row candidates per row

    draw = torch.rand(ids.shape, generator=generator).to(ids.device)
    excluded = set(special)
    pool = torch.tensor([i for i in range(vocab_size) if i not in excluded], device=ids.device)  # (V',) ids a
    # random replacement may take
    random_ids = pool[torch.randint(0, len(pool), ids.shape, generator=generator).to(ids.device)]
    corrupted = torch.where(chosen & (draw < replace[0]), torch.full_like(ids, mask_id), ids)
    corrupted = torch.where(chosen & (draw >= replace[0]) & (draw < replace[0] + replace[1]), random_ids, corrupted)
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    return corrupted, labels


class MaskedTextData(TaskData):
    """Texts (`inputs`, default {text: text}) to mask; scored by the accuracy of the masked tokens'
    top-1 predictions. Its target is made in the head's `corrupt`, so the records need only the text.

    Args:
        tokenizer: the text encoder's tokenizer (the builder passes it): its special and [MASK] ids.
        inputs: {text: a record field}.
    """

    inputs = {"text": "text"}
    tokenizer_of = "encoder"

    def __init__(self, *, tokenizer: TextTokenizer, inputs: dict[str, str] | None = None):
        super().__init__(inputs=inputs)
        if list(self.inputs) != ["text"]:
            raise ValueError(f"inputs: masked language modelling reads the text modality alone, "
                             f"got {sorted(self.inputs)}")
        if tokenizer.mask_id is None:
            raise ValueError("tokenizer: masked language modelling needs a [MASK] token; this tokenizer has none")
        self.tokenizer = tokenizer

    def metrics(self, predictions: list[tuple[int, int]], records: list[dict[str, Any]]) -> dict[str, float]:
        """`predictions`: per example, (masked tokens predicted right, masked tokens)."""
        right, total = sum(p[0] for p in predictions), sum(p[1] for p in predictions)
        return {"masked_accuracy": right / max(1, total)}


class MaskedLanguageTask(Task):
    """BERT's masked language modelling on the text encoder's own tokens (`out.modalities["text"]`,
    before any fusion: a joint model's fused sequence is not read).

    Training masks with BERT's recipe (15% chosen; 80% [MASK], 10% random, 10% kept); evaluation chooses
    the same share with a fixed seed and replaces every chosen token by [MASK], so its accuracy is how
    well a [MASK] is filled in. The head is LayerNorm + Linear to the vocabulary; the loss is cross
    entropy over the chosen positions only.

    Args:
        data: its data side (the tokenizer).
        width: D, the text tokens' width.
        ratio: the share of each text's tokens that is chosen.
        weight: multi-task loss weight.
    """

    data_class = MaskedTextData
    data: MaskedTextData
    needs_fusion = False
    corrupts = True

    def __init__(self, data: MaskedTextData, *, width: int, ratio: float = 0.15, weight: float = 1.0):
        super().__init__(data, weight=weight)
        if not 0.0 < ratio < 1.0:
            raise ValueError(f"ratio: expected a share between 0 and 1, got {ratio!r}")
        self.ratio = ratio
        tok = data.tokenizer
        self.vocab_size, self.mask_id = tok.vocab_size, tok.mask_id
        self.special = [i for i in dict.fromkeys([tok.pad_id, tok.cls_id, tok.sep_id, tok.mask_id]) if i is not None]
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, self.vocab_size))

    def _mask(self, inputs: Batch, generator: torch.Generator | None,
              replace: tuple[float, float]) -> tuple[Batch, torch.Tensor]:
        text = inputs["text"]
        ids, labels = mask_tokens(text["data"], text["mask"], special=self.special,
                                  mask_id=self.mask_id, vocab_size=self.vocab_size, ratio=self.ratio,
                                  replace=replace, generator=generator)
        return {**inputs, "text": {**text, "data": ids}}, labels

    def corrupt(self, inputs: Batch, target: Any) -> tuple[Batch, torch.Tensor]:
        """BERT-masked text ids, and the labels (B, L): the original id where chosen, `IGNORE` elsewhere."""
        return self._mask(inputs, None, BERT_SPLIT)

    def logits(self, out: ModelOutput) -> torch.Tensor:
        """(B, L, V) scores over the vocabulary at every text position."""
        return self.head(out.modalities["text"].tokens)

    def forward(self, out: ModelOutput, target: torch.Tensor) -> dict[str, torch.Tensor]:
        # the head at every position and the positions not chosen ignored: the same mean as selecting the
        # chosen ones first, with shapes that do not depend on the draw (torch.compile keeps one graph)
        logits = self.head(out.modalities["text"].tokens)  # (B, L, V)
        return {"loss": F.cross_entropy(logits.flatten(0, 1).float(), target.flatten(), ignore_index=IGNORE)}

    @torch.no_grad()
    def predict(self, model: nn.Module, inputs: Batch) -> list[tuple[int, int]]:
        """Per example, (masked tokens predicted right, masked tokens), under a fixed masking: the same
        batch is masked the same way every time."""
        masked, labels = self._mask(inputs, torch.Generator().manual_seed(EVAL_SEED), (1.0, 0.0))
        guess = self.logits(model.encode(masked, fuse=False)).argmax(-1)  # (B, L)
        chosen = labels != IGNORE
        right = ((guess == labels) & chosen).sum(1)
        return list(zip(right.tolist(), chosen.sum(1).tolist()))
