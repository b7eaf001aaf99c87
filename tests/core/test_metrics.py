"""Metrics against values computed by hand and against a brute-force reference written in the test."""

import pytest
import torch

from polymodal.metrics import grouped_accuracy, retrieval_recall


def test_grouped_accuracy_by_hand():
    result = grouped_accuracy(["a", "b", "c", "d"], ["a", "x", "c", "y"], ["p", "p", "q", None])
    assert result == {"accuracy": 0.5, "accuracy/p": 0.5, "accuracy/q": 1.0}


def test_grouped_accuracy_with_groups_of_different_sizes():
    predictions = ["1", "2", "x", "4", "5", "6", "7"]
    targets = ["1", "2", "3", "x", "5", "6", "7"]
    groups = ["p", "p", "p", "q", "r", "r", None]  # sizes 3, 1, 2 and one example without a group
    assert grouped_accuracy(predictions, targets, groups) == pytest.approx(
        {"accuracy": 5 / 7, "accuracy/p": 2 / 3, "accuracy/q": 0.0, "accuracy/r": 1.0})
    with pytest.raises(ValueError, match="same length"):
        grouped_accuracy(["a"], ["a", "b"], [None, None])


# Six items; items 0 and 2 share a caption. SCORES[q] lists, for text query q, the images from most to
# least similar; the rank of the first image with the query's caption is in the comment.
CAPTIONS = ["a", "b", "a", "c", "d", "e"]
ORDER = [
    [2, 1, 3, 4, 5, 0],  # caption a: image 2 (same caption) first: rank 1
    [0, 1, 2, 3, 4, 5],  # b: rank 2
    [1, 3, 0, 2, 4, 5],  # a: image 0 at rank 3
    [0, 1, 2, 4, 3, 5],  # c: rank 5
    [0, 1, 2, 3, 5, 4],  # d: rank 6
    [5, 0, 1, 2, 3, 4],  # e: rank 1
]


def _similarity() -> torch.Tensor:
    """(text, image) scores with the rankings of ORDER and no ties (each query row its own offsets)."""
    sim = torch.zeros(6, 6)
    for q, order in enumerate(ORDER):
        for rank, image in enumerate(order):
            sim[q, image] = 10.0 - rank - 0.1 * q
    return sim


def _recall_by_sorting(sim: torch.Tensor, captions: list[str], k: int) -> float:
    hits = 0
    for q in range(sim.shape[0]):
        ranked = sorted(range(sim.shape[1]), key=lambda j: -float(sim[q, j]))
        hits += any(captions[j] == captions[q] for j in ranked[:k])
    return hits / sim.shape[0]


def test_recall_at_k_by_hand_with_duplicate_captions():
    # image = identity, so text @ image.T is exactly the hand-made similarity
    sim = _similarity()
    r = retrieval_recall(torch.eye(6), sim, CAPTIONS, ks=(1, 2, 5))
    assert r["text_to_image/R@1"] == pytest.approx(2 / 6)
    assert r["text_to_image/R@2"] == pytest.approx(3 / 6)
    assert r["text_to_image/R@5"] == pytest.approx(5 / 6)
    for k in (1, 2, 5):  # image→text ranks each image's column over the texts
        assert r[f"image_to_text/R@{k}"] == pytest.approx(_recall_by_sorting(sim.T, CAPTIONS, k))
    # by hand: the first text with each image's caption ranks 5, 3, 1, 5, 5, 1
    assert [r[f"image_to_text/R@{k}"] for k in (1, 2, 5)] == pytest.approx([2 / 6, 2 / 6, 6 / 6])
    assert r["mean_recall"] == pytest.approx((2 + 3 + 5 + 2 + 2 + 6) / 6 / 6)


def test_recall_names_its_sides_and_caps_k_at_the_gallery():
    sim = _similarity()
    r = retrieval_recall(torch.eye(6), sim, CAPTIONS, ks=(10,), names=("video", "text"))
    assert set(r) == {"text_to_video/R@10", "video_to_text/R@10", "mean_recall"}
    assert r["text_to_video/R@10"] == 1.0


def test_retrieval_recall_counts_equal_captions_as_hits():
    image = torch.eye(4)
    text = torch.tensor([[1.0, 0, 0, 0], [0.9, 0.1, 0, 0], [0, 0, 0, 1.0], [0, 0, 1.0, 0]])
    r = retrieval_recall(image, text, ["red", "red", "blue", "green"], ks=(1,))
    # text→image top-1: 0→0 hit, 1→0 hit (same caption), 2→3 miss, 3→2 miss
    assert r["text_to_image/R@1"] == pytest.approx(0.5)
    # image→text top-1: image 0→text 0, image 1→text 1, image 2→text 3 (miss), image 3→text 2 (miss)
    assert r["image_to_text/R@1"] == pytest.approx(0.5)
