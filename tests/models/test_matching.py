"""The matching task builds balanced true / swapped pairs and learns to tell them apart."""

import pytest
import torch

from polymodal.tasks import MatchingData

RECORDS = [{"id": str(i), "video": f"v{i}.mp4", "audio": f"a{i % 5}.wav"} for i in range(10)]


def test_evaluation_pairs_are_fixed_balanced_and_really_swapped():
    task = MatchingData()
    examples = [task.example(RECORDS, i, None) for i in range(len(RECORDS))]
    assert [t for _, t in examples] == [1, 0] * 5
    for i, (record, target) in enumerate(examples):
        assert record["video"] == RECORDS[i]["video"]  # the first modality always stays
        if target == 0:
            assert record["audio"] != RECORDS[i]["audio"]  # a different sound, not the same file again
        else:
            assert record == RECORDS[i]
    assert examples == [task.example(RECORDS, i, None) for i in range(len(RECORDS))]


def test_training_pairs_are_random_and_about_half_swapped():
    task = MatchingData()
    generator = torch.Generator().manual_seed(0)
    targets = []
    for step in range(400):
        record, target = task.example(RECORDS, step % 10, generator)
        targets.append(target)
        assert (record["audio"] == RECORDS[step % 10]["audio"]) == (target == 1)
    assert 0.4 < sum(targets) / len(targets) < 0.6


def test_metrics_use_the_same_pairs():
    task = MatchingData()
    perfect = [1.0 if i % 2 == 0 else 0.0 for i in range(10)]
    assert task.metrics(perfect, RECORDS) == {"accuracy": 1.0}
    assert task.metrics([1.0] * 10, RECORDS) == {"accuracy": 0.5}


def test_inputs_must_be_two_modalities():
    with pytest.raises(ValueError, match="exactly two"):
        MatchingData(inputs={"video": "video"})
