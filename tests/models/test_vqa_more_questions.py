"""VQA with several questions per record: training draws among them, evaluation asks the record's own."""

import pytest
import torch

from polymodal.tasks.vqa import VQAData

RECORDS = [
    {"question": "which way?", "answer": "left", "question_type": "temporal",
     "more_questions": [{"question": "how many beeps?", "answer": "two", "question_type": "sound"},
                        {"question": "high or low?", "answer": "high", "question_type": "sound"}]},
    {"question": "fast or slow?", "answer": "slow", "question_type": "temporal"},
]


def make_task() -> VQAData:
    vocab = VQAData.vocab_from(RECORDS, {"more_questions": "more_questions"})
    return VQAData(vocab=vocab, more_questions="more_questions")


def test_vocabulary_includes_the_answers_of_the_other_questions():
    assert set(VQAData.vocab_from(RECORDS, {"more_questions": "more_questions"})) == {"left", "two", "high", "slow"}
    assert set(VQAData.vocab_from(RECORDS, {})) == {"left", "slow"}


def test_training_draws_every_question_with_its_own_answer():
    task = make_task()
    generator = torch.Generator().manual_seed(0)
    seen = {}
    for _ in range(300):
        record, target = task.example(RECORDS, 0, generator)
        seen[record["question"]] = seen.get(record["question"], 0) + 1
        assert task.vocab[target] == record["answer"]
    assert set(seen) == {"which way?", "how many beeps?", "high or low?"}
    assert min(seen.values()) > 60  # about a third each
    assert RECORDS[0]["question"] == "which way?"  # the records themselves are not changed
    record, target = task.example(RECORDS, 1, generator)  # a record without others asks its own
    assert record["question"] == "fast or slow?" and task.vocab[target] == "slow"


def test_evaluation_asks_the_records_own_question():
    task = make_task()
    for _ in range(5):
        record, target = task.example(RECORDS, 0, None)
        assert record["question"] == "which way?" and task.vocab[target] == "left"
    plain = VQAData(vocab=["left"])
    record, _ = plain.example(RECORDS, 0, torch.Generator().manual_seed(0))
    assert record["question"] == "which way?"  # without the option, one question per record


def test_own_question_share_sets_how_often_the_own_question_is_asked():
    vocab = VQAData.vocab_from(RECORDS, {"more_questions": "more_questions"})
    task = VQAData(vocab=vocab, more_questions="more_questions", own_question_share=0.8)
    generator = torch.Generator().manual_seed(1)
    own = sum(task.example(RECORDS, 0, generator)[0]["question"] == "which way?" for _ in range(1000))
    assert 750 < own < 850  # 0.8, where an even draw would give 1/3
    with pytest.raises(ValueError, match="own_question_share"):
        VQAData(vocab=vocab, own_question_share=1.5)
