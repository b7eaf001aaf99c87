"""Every task loss against an oracle written out in the test: loops over pairs, the formula by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from polymodal.modalities.base import EncoderOutput
from polymodal.models.embedding import MAX_LOGIT_SCALE, embed
from polymodal.models.output import ModelOutput
from polymodal.tasks.classification import ClassificationData, ClassificationTask
from polymodal.tasks.contrastive import ContrastiveData, ContrastiveTask, info_nce
from polymodal.tasks.matching import MatchingData, MatchingTask
from polymodal.tasks.vqa import VQAData, VQATask


def nll_of_row(scores: list[float], target: int) -> float:
    """-log softmax(scores)[target], written out."""
    top = max(scores)
    return -(scores[target] - top - math.log(sum(math.exp(s - top) for s in scores)))


def info_nce_by_loops(a: torch.Tensor, b: torch.Tensor, scale: float) -> float:
    """Mean over queries a_i of -log p(b_i | a_i), and over queries b_j of -log p(a_j | b_j), averaged."""
    n = a.shape[0]
    sim = [[scale * float(a[i] @ b[j]) for j in range(n)] for i in range(n)]
    a_to_b = sum(nll_of_row(sim[i], i) for i in range(n)) / n
    b_to_a = sum(nll_of_row([sim[i][j] for i in range(n)], j) for j in range(n)) / n
    return (a_to_b + b_to_a) / 2


def pooled_output(pooled: torch.Tensor, **kw) -> ModelOutput:
    return ModelOutput(modalities={}, pooled=pooled, **kw)


def test_info_nce_equals_the_average_of_both_directions_by_loops():
    torch.manual_seed(0)
    a = F.normalize(torch.randn(5, 4), dim=-1)
    b = F.normalize(torch.randn(5, 4), dim=-1)
    for scale in (1.0, 14.3):
        assert info_nce(a, b, torch.tensor(scale)).item() == pytest.approx(info_nce_by_loops(a, b, scale), abs=1e-5)


def test_info_nce_is_not_symmetric_in_one_direction_alone():
    # b_0 is close to every a_i: the a→b and b→a directions differ, so dropping one changes the value
    a = torch.eye(3)
    b = F.normalize(torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), dim=-1)
    n = 3
    sim = (10.0 * a @ b.T).tolist()
    one_way = sum(nll_of_row(sim[i], i) for i in range(n)) / n
    other_way = sum(nll_of_row([sim[i][j] for i in range(n)], j) for j in range(n)) / n
    assert abs(one_way - other_way) > 0.1
    assert info_nce(a, b, torch.tensor(10.0)).item() == pytest.approx((one_way + other_way) / 2, abs=1e-5)


def test_contrastive_task_uses_the_model_scale_and_its_two_inputs():
    torch.manual_seed(1)
    video, text = F.normalize(torch.randn(4, 6), dim=-1), F.normalize(torch.randn(4, 6), dim=-1)
    task = ContrastiveTask(ContrastiveData(inputs={"video": "video", "text": "text"}))
    out = pooled_output(None, embeddings={"video": video, "text": text}, logit_scale=torch.tensor(20.0))
    loss = task(out, torch.zeros(4))["loss"]
    assert loss.item() == pytest.approx(info_nce_by_loops(video, text, 20.0), abs=1e-5)


@pytest.mark.parametrize("raw, expected", [
    (math.log(1000.0), 100.0),  # above OpenCLIP's 1/100 temperature: clamped to 100
    (MAX_LOGIT_SCALE + 1e-3, 100.0),
    (math.log(1 / 0.07), 1 / 0.07),  # inside: exp of the learnt value
    (0.0, 1.0),
    (-2.0, 1.0),  # below: clamped to a temperature of 1
])
def test_logit_scale_is_clamped_at_both_ends(raw, expected):
    maps = nn.ModuleDict({"image": nn.Linear(3, 2, bias=False)})
    out = EncoderOutput(tokens=torch.zeros(2, 1, 3), mask=torch.ones(2, 1, dtype=torch.bool),
                        pooled=torch.randn(2, 3))
    embeddings, scale = embed(maps, nn.Parameter(torch.tensor(raw)), {"image": out})
    assert scale.item() == pytest.approx(expected, rel=1e-5)
    torch.testing.assert_close(embeddings["image"].norm(dim=-1), torch.ones(2))


def test_a_clamped_logit_scale_gets_no_gradient():
    scale = nn.Parameter(torch.tensor(math.log(1000.0)))
    maps = nn.ModuleDict({"a": nn.Linear(2, 2)})
    out = EncoderOutput(tokens=torch.zeros(1, 1, 2), mask=torch.ones(1, 1, dtype=torch.bool), pooled=torch.ones(1, 2))
    embed(maps, scale, {"a": out})[1].backward()
    assert scale.grad.item() == 0.0


def test_matching_loss_is_binary_cross_entropy_by_hand():
    torch.manual_seed(2)
    task = MatchingTask(MatchingData(), width=4, hidden=8)
    pooled = torch.randn(4, 4)
    target = torch.tensor([1, 0, 1, 0])
    result = task(pooled_output(pooled), target)
    logits = result["logits"].tolist()
    expected = -sum(t * math.log(1 / (1 + math.exp(-z))) + (1 - t) * math.log(1 - 1 / (1 + math.exp(-z)))
                    for z, t in zip(logits, target.tolist())) / 4
    assert result["loss"].item() == pytest.approx(expected, abs=1e-5)
    torch.testing.assert_close(result["logits"], task.head(pooled).squeeze(-1))


def test_matching_accuracy_knows_which_held_out_pairs_are_true():
    # in evaluation even items are the record's own pair, odd items are swapped
    task = MatchingData()
    records = [{"video": f"v{i}", "audio": f"a{i}"} for i in range(4)]
    assert [task.example(records, i, None)[1] for i in range(4)] == [1, 0, 1, 0]
    assert task.example(records, 1, None)[0]["audio"] == "a3"  # half the set away
    # predictions: true pair 0.9 ✓, swapped 0.2 ✓, true pair 0.4 ✗, swapped 0.1 ✓
    assert task.metrics([0.9, 0.2, 0.4, 0.1], records) == {"accuracy": 0.75}


def test_vqa_cross_entropy_over_its_vocabulary_by_hand():
    torch.manual_seed(3)
    records = [{"answer": a} for a in ["no", "yes", "yes", "red", "no", "yes"]]
    vocab = VQAData.vocab_from(records, {})
    assert vocab == ["yes", "no", "red"]  # by frequency, ties alphabetically
    task = VQATask(VQAData(vocab=vocab), width=4, hidden=8)
    asked = [{"answer": "no"}, {"answer": "red"}, {"answer": "purple"}, {"answer": "yes"}]
    target = torch.tensor([task.data.target(r) for r in asked])
    assert target.tolist() == [1, 2, -100, 0]  # "purple" was never a training answer: left out of the loss
    pooled = torch.randn(4, 4)
    result = task(pooled_output(pooled), target)
    logits = task.head(pooled).tolist()
    expected = (nll_of_row(logits[0], 1) + nll_of_row(logits[1], 2) + nll_of_row(logits[3], 0)) / 3
    assert result["loss"].item() == pytest.approx(expected, abs=1e-5)
    assert task.predict_output(pooled_output(pooled)) == [vocab[max(range(3), key=row.__getitem__)] for row in logits]


def test_classification_predicts_the_argmax_label_and_scores_sum_to_one():
    torch.manual_seed(4)
    task = ClassificationTask(ClassificationData(vocab=["circle", "square"]), width=4, hidden=0)
    pooled = torch.randn(6, 4)
    scores = task.scores(pooled_output(pooled))
    torch.testing.assert_close(scores.sum(-1), torch.ones(6))
    assert task.predict_output(pooled_output(pooled)) == [["circle", "square"][i] for i in scores.argmax(-1).tolist()]
    assert task.data.metrics(["circle", "square", "circle"], [{"label": "circle"}, {"label": "circle"},
                                                         {"label": "circle"}]) == {"accuracy": 2 / 3}
