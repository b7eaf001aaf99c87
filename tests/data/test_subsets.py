"""Fixed training subsets (`data.train_fraction`) and the shipped sentence corpus's held-out split."""

import hashlib
import json

import pytest

from conftest import tiny_config, write_config
from polymodal.config import load_config
from polymodal.data.manifest import subset
from polymodal.data.sentences import GLOSSES, read_sentences, split_of, write_sentences
from polymodal.errors import ConfigError
from polymodal.training.trainer import Trainer

RECORDS = [{"id": f"r{i}", "x": i} for i in range(2000)]


def test_a_subset_is_chosen_by_the_hash_of_each_id_and_is_nested():
    tenth = subset(RECORDS, 0.1)
    expected = [r for r in RECORDS if int(hashlib.sha1(r["id"].encode()).hexdigest()[:12], 16) / 16**12 < 0.1]
    assert tenth == expected and 150 < len(tenth) < 250
    fifth = subset(RECORDS, 0.2)
    assert {r["id"] for r in tenth} < {r["id"] for r in fifth}
    assert subset(list(reversed(RECORDS)), 0.1) == list(reversed(tenth))  # not by position
    assert subset(RECORDS, 1.0) is RECORDS


def test_train_fraction_trains_on_the_subset_and_is_checked(tmp_path, shapes_data):
    config = tiny_config(shapes_data, "vqa", max_steps=1, batch_size=8)
    config["data"]["train_fraction"] = 0.5
    trainer = Trainer(load_config(write_config(tmp_path, config)), tmp_path / "run", log=lambda _: None)
    kept = trainer.train_records["vqa"]
    from polymodal.data.manifest import read_manifest

    assert kept == subset(read_manifest(shapes_data / "train.jsonl"), 0.5) and 0 < len(kept) < 96
    assert trainer.val_records["vqa"] == read_manifest(shapes_data / "val.jsonl")  # held-out data stays whole
    config["data"]["train_fraction"] = 0.0
    with pytest.raises(ConfigError, match="data.train_fraction: expected a share above 0 and at most 1"):
        load_config(write_config(tmp_path, config))


def test_the_sentence_corpus_splits_by_sentence_and_keeps_the_held_out_part_apart(tmp_path):
    counts = write_sentences(tmp_path, glosses=True, log=lambda _: None)
    splits = {name: [json.loads(line)["text"] for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
              for name in ("train", "val", "test")}
    assert {k: len(v) for k, v in splits.items()} == counts
    assert not set(splits["test"]) & set(splits["train"]) and not set(splits["val"]) & set(splits["train"])
    assert all(split_of(s, 0.03, 0.06) == "test" for s in splits["test"])
    sentences = read_sentences()
    assert len(sentences) == len(set(sentences)) == counts["val"] + counts["test"] + counts["train"] \
        - len(read_sentences(GLOSSES))
    assert 0.05 < counts["test"] / len(sentences) < 0.07  # the test share asked for
