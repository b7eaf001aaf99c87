"""Metrics against values computed by hand."""

import pytest
import torch

from polymodal.evaluation.metrics import grouped_accuracy, retrieval_recall


def test_grouped_accuracy_by_hand():
    result = grouped_accuracy(["a", "b", "c", "d"], ["a", "x", "c", "y"], ["p", "p", "q", None])
    assert result == {"accuracy": 0.5, "accuracy/p": 0.5, "accuracy/q": 1.0}


def test_retrieval_recall_counts_equal_captions_as_hits():
    # 4 items; items 0 and 1 share a caption. Text 1's nearest image is image 0 (same caption: a hit).
    image = torch.eye(4)
    text = torch.tensor([[1.0, 0, 0, 0], [0.9, 0.1, 0, 0], [0, 0, 0, 1.0], [0, 0, 1.0, 0]])
    captions = ["red", "red", "blue", "green"]
    r = retrieval_recall(image, text, captions, ks=(1, 2))
    # text→image top-1: 0→0 hit, 1→0 hit (same caption), 2→3 miss, 3→2 miss
    assert r["text_to_image/R@1"] == pytest.approx(0.5)
    # top-2: 2→{3,?} image 2 ranks second (score 0) tie with others... use k=4 for an exact value instead
    r4 = retrieval_recall(image, text, captions, ks=(4,))
    assert r4["text_to_image/R@4"] == 1.0
    # image→text top-1: image 0→text 0 (1.0), image 1→text 1 (0.1), image 2→text 3, image 3→text 2
    assert r["image_to_text/R@1"] == pytest.approx(0.5)
