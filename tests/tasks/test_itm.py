"""Image–text matching with hard negatives: what the sampler may draw and how often, the loss by hand, the
evaluation pairs and metrics, and a short run that learns to match."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from polymodal.fusion.late import LateFusion
from polymodal.modalities.base import EncoderOutput
from polymodal.models.output import ModelOutput
from polymodal.tasks.itm import ITMData, ITMTask, roc_auc, sample_hard_negatives


def test_a_negative_is_never_the_positive_nor_an_equal_caption():
    captions = torch.tensor([0, 1, 1, 2, 0, 3])
    same = captions[:, None] == captions[None, :]
    similarity = torch.randn(6, 6, generator=torch.Generator().manual_seed(0))
    similarity = similarity + 30.0 * same  # the forbidden ones look by far the most alike
    g = torch.Generator().manual_seed(1)
    drawn = torch.stack([sample_hard_negatives(similarity, same, g)[0] for _ in range(2000)])  # (2000, 6)
    for row in range(6):
        forbidden = [j for j in range(6) if captions[j] == captions[row]]
        assert not torch.isin(drawn[:, row], torch.tensor(forbidden)).any(), row
        allowed = [j for j in range(6) if captions[j] != captions[row]]
        assert set(drawn[:, row].tolist()) == set(allowed)  # every allowed one does come up


def test_a_row_without_any_other_caption_has_no_negative():
    same = torch.tensor([[True, True, False], [True, True, False], [False, False, True]])
    index, valid = sample_hard_negatives(torch.zeros(3, 3), same, torch.Generator().manual_seed(2))
    assert valid.tolist() == [True, True, True] and index.tolist() == [2, 2, 0]
    index, valid = sample_hard_negatives(torch.zeros(2, 2), torch.ones(2, 2, dtype=torch.bool))
    assert valid.tolist() == [False, False]


def test_negatives_are_drawn_in_proportion_to_the_softmax_of_the_similarity():
    similarity = torch.tensor([[9.0, 0.0, math.log(3.0), math.log(6.0)]])  # column 0 is the positive
    same = torch.tensor([[True, False, False, False]])
    g = torch.Generator().manual_seed(3)
    draws = torch.stack([sample_hard_negatives(similarity, same, g)[0] for _ in range(20000)]).squeeze(1)
    share = torch.bincount(draws, minlength=4).float() / len(draws)
    expected = torch.tensor([0.0, 1 / 10, 3 / 10, 6 / 10])  # e^0 : e^log3 : e^log6 = 1 : 3 : 6
    torch.testing.assert_close(share, expected, atol=0.012, rtol=0)


def test_the_task_never_takes_an_equal_caption_however_alike_it_looks():
    task = ITMTask(ITMData(), fusion=LateFusion(["image", "text"], 4), width=4, hidden=8)
    e = F.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [1.0, 0.05]]), dim=-1)  # 0, 1, 3 look alike
    captions = torch.tensor([0, 1, 2, 1])
    out = ModelOutput(modalities={}, pooled=None, embeddings={"image": e, "text": e}, logit_scale=torch.tensor(100.0))
    torch.manual_seed(0)
    for _ in range(200):
        text_of, text_ok, image_of, image_ok = task.negatives(out, captions)
        assert text_ok.all() and image_ok.all()
        assert (captions[text_of] != captions).all() and (captions[image_of] != captions).all()
    # image 1's most alike texts are 3 (its own caption: excluded) and 0: it takes 0, never 3 nor itself
    assert text_of[1].item() == 0 and image_of[3].item() == 0


def encoded(pooled: torch.Tensor) -> EncoderOutput:
    return EncoderOutput(tokens=pooled[:, None], mask=torch.ones(len(pooled), 1, dtype=torch.bool), pooled=pooled)


def bce(z: float, label: int) -> float:
    p = 1 / (1 + math.exp(-z))
    return -math.log(p if label else 1 - p)


def test_the_loss_by_hand_over_positives_and_both_hard_negatives():
    torch.manual_seed(4)
    fusion = LateFusion(["image", "text"], 4, combine="mean")  # the fused vector: mean of the two
    task = ITMTask(ITMData(), fusion=fusion, width=4, hidden=8)
    image, text = torch.randn(3, 4), torch.randn(3, 4)
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])  # image embeddings
    f = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])  # text embeddings
    outputs = {"image": encoded(image), "text": encoded(text)}
    out = ModelOutput(modalities=outputs, pooled=fusion(outputs).pooled, embeddings={"image": e, "text": f},
                      logit_scale=torch.tensor(100.0))
    captions = torch.tensor([0, 1, 1])  # texts 1 and 2 are one caption
    # image 0 may take text 1 or 2 and looks like text 2; images 1, 2 may take only text 0.
    # text 0 may take image 1 or 2 and looks like image 1; texts 1, 2 may take only image 0.
    text_of, _, image_of, _ = task.negatives(out, captions)
    assert text_of.tolist() == [2, 0, 0] and image_of.tolist() == [1, 0, 0]
    score = lambda i, j: task.head((image[i] + text[j]) / 2).item()  # noqa: E731
    pairs = [(0, 0, 1), (1, 1, 1), (2, 2, 1), (0, 2, 0), (1, 0, 0), (2, 0, 0), (1, 0, 0), (0, 1, 0), (0, 2, 0)]
    expected = sum(bce(score(i, j), label) for i, j, label in pairs) / 9
    assert task(out, captions)["loss"].item() == pytest.approx(expected, abs=1e-5)
    # without the negatives of one side, or the positives, the value differs
    assert abs(expected - sum(bce(score(i, j), y) for i, j, y in pairs[:6]) / 6) > 1e-3
    assert abs(expected - sum(bce(score(i, j), y) for i, j, y in pairs[3:]) / 6) > 1e-3


def test_training_examples_are_true_pairs_and_evaluation_pairs_are_fixed_and_balanced():
    data = ITMData()
    records = [{"image": f"i{i}", "text": t} for i, t in enumerate(["red", "blue", "red", "green"])]
    g = torch.Generator().manual_seed(0)
    assert [data.example(records, i, g) for i in range(4)] == [(r, r["text"]) for r in records]
    assert data.collate_targets(["red", "blue", "red", "green"]).tolist() == [0, 1, 0, 2]
    held_out = [data.example(records, i, None)[0] for i in range(4)]
    assert held_out[0] == records[0] and held_out[2] == records[2]
    assert held_out[1] == {"image": "i1", "text": "green"}  # half the set away: record 3's text
    assert held_out[3] == {"image": "i3", "text": "blue"}  # record 1's
    # true pairs 0.9 and 0.4, mismatched 0.6 and 0.1: accuracy 2/4, AUC: 0.9 > both, 0.4 > 0.1 only: 3/4
    assert data.metrics([0.9, 0.6, 0.4, 0.1], records) == {"accuracy": 0.5, "auc": 0.75}
    assert roc_auc([0.5, 0.5], [True, False]) == 0.5


def test_a_short_run_learns_to_tell_true_pairs_from_hard_negatives():
    # 8 kinds of thing, two examples of each in a batch of 16; an image and a text match when their kinds do
    torch.manual_seed(5)
    kinds = torch.arange(16) % 8
    encode_image, encode_text = torch.nn.Linear(8, 16), torch.nn.Linear(8, 16)
    fusion = LateFusion(["image", "text"], 16, combine="product")  # a match is bilinear: easy to learn
    task = ITMTask(ITMData(), fusion=fusion, width=16, hidden=32)
    modules = torch.nn.ModuleList([encode_image, encode_text, fusion, task])
    optimizer = torch.optim.AdamW(modules.parameters(), lr=1e-2)

    def output(image_kinds: torch.Tensor, text_kinds: torch.Tensor) -> ModelOutput:
        image = encode_image(F.one_hot(image_kinds, 8).float() + 0.3 * torch.randn(len(image_kinds), 8))
        text = encode_text(F.one_hot(text_kinds, 8).float())
        outputs = {"image": encoded(image), "text": encoded(text)}
        return ModelOutput(modalities=outputs, pooled=fusion(outputs).pooled, logit_scale=torch.tensor(10.0),
                           embeddings={"image": F.normalize(image, dim=-1), "text": F.normalize(text, dim=-1)})

    losses = []
    for _ in range(300):
        loss = task(output(kinds, kinds), kinds)["loss"]  # the caption ids: the kinds
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-20:]) / 20 < 0.4 * sum(losses[:10]) / 10
    with torch.no_grad():  # held-out pairs: every image with its own kind and with the next kind
        true = task.predict_output(output(kinds, kinds))
        false = task.predict_output(output(kinds, (kinds + 1) % 8))
    accuracy = (sum(p >= 0.5 for p in true) + sum(p < 0.5 for p in false)) / 32
    assert accuracy >= 0.9
