"""Masked language modelling: BERT's masking proportions, special tokens, the loss at chosen positions only,
and masked-token accuracy, each against numbers worked out in the test."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from polymodal.modalities.base import EncoderOutput
from polymodal.modalities.text.tokenizer import TextTokenizer
from polymodal.models.output import ModelOutput
from polymodal.tasks.masked_text import IGNORE, MaskedLanguageTask, MaskedTextData, mask_tokens

TEXTS = ["a red circle on the left", "two blue squares above a green triangle", "a small yellow star"]


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    return TextTokenizer.train(TEXTS, vocab_size=60)


def special_of(tok: TextTokenizer) -> torch.Tensor:
    return torch.tensor([tok.pad_id, tok.cls_id, tok.sep_id, tok.mask_id])


def batch_of(tok: TextTokenizer, rows: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[CLS] w1 .. wn [SEP] [PAD]...: n from 1 to length - 2, words drawn from the non-special ids."""
    g = torch.Generator().manual_seed(seed)
    words = torch.tensor([i for i in range(tok.vocab_size) if i not in special_of(tok).tolist()])
    ids = torch.full((rows, length), tok.pad_id)
    for r in range(rows):
        n = int(torch.randint(1, length - 1, (), generator=g))
        ids[r, 0], ids[r, n + 1] = tok.cls_id, tok.sep_id
        ids[r, 1:n + 1] = words[torch.randint(0, len(words), (n,), generator=g)]
    return ids, ids != tok.pad_id


def _corrupt_with_the_task(tok: TextTokenizer, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    task = MaskedLanguageTask(MaskedTextData(tokenizer=tok), width=8)
    torch.manual_seed(1)  # corrupt draws from torch's global generator, as training does
    inputs, labels = task.corrupt({"text": {"data": ids, "mask": mask}}, None)
    return inputs["text"]["data"], labels


@pytest.mark.parametrize("via", ["mask_tokens", "the task's corrupt"])
def test_each_sequence_gets_15_percent_of_its_words_and_the_chosen_split_80_10_10(tokenizer, via):
    """Both the function's defaults and what training calls (`MaskedLanguageTask.corrupt`): of the chosen
    tokens 80% become [MASK], 10% a random token, 10% stay as they are. The kept share is ~0.102 (10%, and
    the random draws that hit the original); a kept share of zero (all 20% replaced) or doubled (no random
    tokens) fails by ten times the tolerance."""
    tok = tokenizer
    ids, mask = batch_of(tok, 20000, 24, seed=0)
    if via == "mask_tokens":
        corrupted, labels = mask_tokens(ids, mask, special=special_of(tok), mask_id=tok.mask_id,
                                        vocab_size=tok.vocab_size, generator=torch.Generator().manual_seed(1))
    else:
        corrupted, labels = _corrupt_with_the_task(tok, ids, mask)
    chosen = labels != IGNORE
    words = (mask & ~torch.isin(ids, special_of(tok))).sum(1)
    expected = torch.clamp(torch.round(0.15 * words.float()), min=1)
    assert torch.equal(chosen.sum(1), expected.long())  # exactly round(15%) per sequence, at least one
    assert torch.equal(labels[chosen], ids[chosen])  # the labels are the original ids
    as_mask = (corrupted == tok.mask_id) & chosen
    changed = (corrupted != ids) & ~as_mask & chosen
    kept = (corrupted == ids) & chosen
    n = chosen.sum().item()
    assert n > 30000
    # a random token equals the original 1 time in |words| = vocab - 4: those read as kept
    other = 1 - 1 / (tok.vocab_size - 4)
    assert as_mask.sum().item() / n == pytest.approx(0.8, abs=0.01)
    assert changed.sum().item() / n == pytest.approx(0.1 * other, abs=0.01)
    assert kept.sum().item() / n == pytest.approx(0.1 + 0.1 * (1 - other), abs=0.01)
    assert torch.equal(corrupted[~chosen], ids[~chosen])  # nothing else is touched


def test_special_tokens_and_padding_are_never_chosen_nor_drawn(tokenizer):
    tok = tokenizer
    ids, mask = batch_of(tok, 2000, 12, seed=3)
    corrupted, labels = mask_tokens(ids, mask, special=special_of(tok), mask_id=tok.mask_id,
                                    vocab_size=tok.vocab_size, ratio=0.5, generator=torch.Generator().manual_seed(4))
    special_place = torch.isin(ids, special_of(tok)) | ~mask
    assert (labels[special_place] == IGNORE).all()
    assert torch.equal(corrupted[special_place], ids[special_place])
    replaced = (labels != IGNORE) & (corrupted != ids) & (corrupted != tok.mask_id)
    assert replaced.any() and not torch.isin(corrupted[replaced], special_of(tok)).any()
    # one word only ([CLS] w [SEP]): 15% of 1 rounds to 0, yet it is chosen
    one = torch.tensor([[tok.cls_id, 7, tok.sep_id, tok.pad_id]])
    _, labels = mask_tokens(one, one != tok.pad_id, special=special_of(tok), mask_id=tok.mask_id,
                            vocab_size=tok.vocab_size)
    assert labels.tolist() == [[IGNORE, 7, IGNORE, IGNORE]]


def text_output(tokens: torch.Tensor) -> ModelOutput:
    mask = torch.ones(tokens.shape[:2], dtype=torch.bool)
    return ModelOutput(modalities={"text": EncoderOutput(tokens=tokens, mask=mask, pooled=tokens[:, 0])}, pooled=None)


def nll(row: list[float], target: int) -> float:
    top = max(row)
    return -(row[target] - top - math.log(sum(math.exp(v - top) for v in row)))


def test_the_loss_is_cross_entropy_at_chosen_positions_only(tokenizer):
    torch.manual_seed(5)
    task = MaskedLanguageTask(MaskedTextData(tokenizer=tokenizer), width=8)
    tokens = torch.randn(2, 5, 8)
    labels = torch.full((2, 5), IGNORE)
    labels[0, 2], labels[1, 1], labels[1, 3] = 11, 20, 9
    loss = task(text_output(tokens), labels)["loss"].item()
    logits = task.head(tokens).tolist()
    by_hand = (nll(logits[0][2], 11) + nll(logits[1][1], 20) + nll(logits[1][3], 9)) / 3
    assert loss == pytest.approx(by_hand, abs=1e-5)
    elsewhere = tokens.clone()
    elsewhere[0, 1] += 3 * torch.randn(8)  # positions that were not chosen (not a constant: LayerNorm removes it)
    elsewhere[1, 4] -= 3 * torch.randn(8)
    assert task(text_output(elsewhere), labels)["loss"].item() == pytest.approx(loss, abs=1e-6)
    there = tokens.clone()
    there[1, 3] += 3 * torch.randn(8)
    assert abs(task(text_output(there), labels)["loss"].item() - loss) > 1e-3


def test_corrupt_leaves_the_batch_alone_and_returns_labels(tokenizer):
    tok = tokenizer
    task = MaskedLanguageTask(MaskedTextData(tokenizer=tok), width=8)
    ids, mask = batch_of(tok, 16, 10, seed=6)
    inputs = {"text": {"data": ids.clone(), "mask": mask}}
    torch.manual_seed(7)
    masked, labels = task.corrupt(inputs, torch.zeros(16))
    assert torch.equal(inputs["text"]["data"], ids)  # not changed in place
    assert masked["text"]["mask"] is mask and (masked["text"]["data"] != ids).any()
    assert torch.equal(labels[labels != IGNORE], ids[labels != IGNORE])


class OneHotModel(nn.Module):
    """Its text tokens are one-hot rows of `answers`: a head of identity then predicts `answers`."""

    def __init__(self, answers: torch.Tensor, vocab: int):
        super().__init__()
        self.answers, self.vocab, self.seen = answers, vocab, []

    def encode(self, inputs, fuse=True):
        self.seen.append(inputs["text"]["data"].clone())
        return text_output(nn.functional.one_hot(self.answers, self.vocab).float())


def test_accuracy_by_hand_under_a_fixed_masking_of_all_mask_tokens(tokenizer):
    tok = tokenizer
    task = MaskedLanguageTask(MaskedTextData(tokenizer=tok), width=tok.vocab_size, ratio=0.3)
    task.head = nn.Identity()
    ids, mask = batch_of(tok, 6, 12, seed=8)
    answers = ids.clone()
    answers[:, 1] = tok.sep_id  # every first word is predicted wrong
    model = OneHotModel(answers, tok.vocab_size)
    inputs = {"text": {"data": ids, "mask": mask}}
    first = task.predict(model, inputs)
    assert task.predict(model, inputs) == first  # the same masking every time
    masked = model.seen[0]
    chosen = masked == tok.mask_id  # evaluation replaces every chosen token by [MASK]
    assert torch.equal(model.seen[1], masked) and torch.equal(masked[~chosen], ids[~chosen])
    assert [p[1] for p in first] == chosen.sum(1).tolist()
    wrong = chosen[:, 1].long()
    assert [p[0] for p in first] == (chosen.sum(1) - wrong).tolist()
    right, total = sum(p[0] for p in first), sum(p[1] for p in first)
    assert task.data.metrics(first, [{}] * 6) == {"masked_accuracy": right / total}
    assert task.data.metrics([(2, 3), (0, 1)], [{}, {}]) == {"masked_accuracy": 0.5}


def test_a_tokenizer_without_mask_and_a_bad_ratio_are_named(tokenizer):
    class NoMask:
        mask_id = None
    with pytest.raises(ValueError, match=r"tokenizer: masked language modelling needs a \[MASK\] token"):
        MaskedTextData(tokenizer=NoMask())
    with pytest.raises(ValueError, match=r"ratio: expected a share between 0 and 1, got 1.5"):
        MaskedLanguageTask(MaskedTextData(tokenizer=tokenizer), width=8, ratio=1.5)
    with pytest.raises(ValueError, match=r"inputs: masked language modelling reads the text modality alone"):
        MaskedTextData(tokenizer=tokenizer, inputs={"image": "image"})
