"""WebDataset shards: written from a manifest, read back whole, streamed for training split by process and
worker, shuffled, and resumed at the sample where a run stopped."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from conftest import tiny_config, write_config
from polymodal.config import load_config
from polymodal.data.loader import TaskDataset
from polymodal.data.manifest import read_manifest, write_manifest
from polymodal.data.media import write_audio, write_video
from polymodal.data.shards import MediaBytes, is_shard_pattern, read_shard_records, shard_urls, write_shards
from polymodal.data.stream import ShardStream
from polymodal.data.task import TaskData
from polymodal.errors import DataError
from polymodal.training.checkpoint import list_checkpoints
from polymodal.training.trainer import Trainer

QUIET = dict(log=lambda _: None)


@pytest.fixture(scope="module")
def shards(shapes_data, tmp_path_factory) -> Path:
    """The tiny benchmark's 96 training records in 5 shards (4 × 20 + 16)."""
    out = tmp_path_factory.mktemp("shards")
    write_shards(read_manifest(shapes_data / "train.jsonl"), out, shard_size=20, **QUIET)
    return out


def pattern(folder: Path) -> str:
    return str(folder / "shard-{000000..000004}.tar")


def test_shards_hold_every_record_and_its_media_bytes(shapes_data, shards):
    records = read_manifest(shapes_data / "train.jsonl")
    index = json.loads((shards / "shards.json").read_text())
    assert [s["samples"] for s in index["shards"]] == [20, 20, 20, 20, 16] and index["samples"] == 96
    assert index["pattern"] == "shard-{000000..000004}.tar" and len(shard_urls(pattern(shards))) == 5
    assert shard_urls(str(shards)) == shard_urls(pattern(shards)) and is_shard_pattern(str(shards))
    read = read_shard_records(pattern(shards))
    assert [r["id"] for r in read] == [r["id"] for r in records]
    for original, back in zip(records, read):
        assert isinstance(back["image"], MediaBytes) and back["image"].suffix == ".png"
        assert bytes(back["image"]) == Path(original["image"]).read_bytes()
        assert {k: v for k, v in back.items() if k != "image"} == {k: v for k, v in original.items()
                                                                   if k not in ("image", "_line")}
    # the text-only reading: every field, media named but not read
    text = read_shard_records(pattern(shards), media=False)
    assert [r["question"] for r in text] == [r["question"] for r in records]
    assert all(isinstance(r["image"], str) and r["image"].endswith(".image.png") for r in text)


def test_examples_from_shards_equal_examples_from_files_in_every_epoch(shapes_data, shards):
    # the decoded-image cache is keyed by path: a shard's media must never be served as another's
    from polymodal.builders import build_system

    records = read_manifest(shapes_data / "train.jsonl")
    config = load_config(write_config(shards, tiny_config(shapes_data, "vqa"), "check.yaml"))
    system = build_system(config, records)
    data = system.model.tasks["vqa"].data
    files = TaskDataset(records, data, system.processors)
    stored = TaskDataset(read_shard_records(pattern(shards)), data, system.processors)
    for _ in range(2):  # the second pass is served from the cache
        for i in range(len(records)):
            mine, theirs = files[i], stored[i]
            assert torch.equal(mine["inputs"]["image"], theirs["inputs"]["image"]), records[i]["id"]
            assert mine["inputs"]["text"] == theirs["inputs"]["text"] and mine["target"] == theirs["target"]


def test_sound_and_video_travel_and_other_tools_shards_read(tmp_path):
    write_audio(tmp_path / "a.wav", torch.linspace(-0.5, 0.5, 1600).numpy(), 16000)
    write_video(tmp_path / "v.mp4", torch.zeros(4, 16, 16, 3, dtype=torch.uint8).numpy(), fps=4)
    manifest = write_manifest(tmp_path / "m.jsonl", [{"id": "x", "audio": "a.wav", "video": "v.mp4", "text": "hi"}])
    write_shards(read_manifest(manifest), tmp_path / "out", **QUIET)
    (tmp_path / "g.gif").write_bytes(b"GIF89a...")  # a suffix no other tool's shards use for an image
    manifest = write_manifest(tmp_path / "m.jsonl", [{"id": "x", "audio": "a.wav", "video": "v.mp4", "text": "hi",
                                                      "image": "g.gif"}])
    write_shards(read_manifest(manifest, check_media=False), tmp_path / "out", **QUIET)
    (back,) = read_shard_records(str(tmp_path / "out" / "shard-000000.tar"))
    assert back["image"].suffix == ".gif" and bytes(back["image"]) == b"GIF89a..."
    assert back["audio"].suffix == ".wav" and bytes(back["audio"]) == (tmp_path / "a.wav").read_bytes()
    assert back["video"].suffix == ".mp4" and bytes(back["video"]) == (tmp_path / "v.mp4").read_bytes()
    # img2dataset's layout: KEY.jpg, KEY.txt, KEY.json (without an id), KEY.cls
    other = tmp_path / "other.tar"
    with tarfile.open(other, "w") as tar:
        for name, data in [("0001.jpg", b"\xff\xd8jpeg"), ("0001.txt", b"a red circle\n"),
                           ("0001.json", b'{"width": 32}'), ("0001.cls", b"3")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, __import__("io").BytesIO(data))
    (record,) = read_shard_records(str(other))
    assert record["id"] == "0001" and record["text"] == "a red circle" and record["label"] == "3"
    assert record["width"] == 32 and record["image"].suffix == ".jpg"


def test_bad_shards_are_named(tmp_path, shards):
    with pytest.raises(DataError, match=r"2 of its 7 shards not found: .*shard-000005.tar, .*shard-000006.tar"):
        shard_urls(str(shards / "shard-{000000..000006}.tar"))
    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as tar:
        info = tarfile.TarInfo("k1.json")
        info.size = 3
        tar.addfile(info, __import__("io").BytesIO(b"[1]"))
    with pytest.raises(DataError, match=r"bad.tar: sample k1: its .json member must be a JSON object, got list"):
        read_shard_records(str(bad))
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes((shards / "shard-000000.tar").read_bytes()[:3000])
    with pytest.raises(DataError, match=r"truncated.tar: cannot read this shard"):
        read_shard_records(str(truncated))
    with pytest.raises(DataError, match=r"truncated.tar: cannot read this shard"):
        list(itertools.islice(ShardStream([str(truncated)], TaskDataset([], Ids(), {}), 2, keep=lambda r: True,
                                          seed=0).records(0, 1), 100))  # its first samples read, then the error
    assert is_shard_pattern("d/shard-{000000..000009}.tar") and is_shard_pattern("pipe:curl -s http://x/a.tar")
    assert not is_shard_pattern("d/train.jsonl")


class Ids(TaskData):
    """A data side with no inputs to prepare: each example's target is its record's id."""

    inputs = {}

    def usable(self, record):
        return True

    def target(self, record):
        return record["id"]

    def collate_targets(self, targets):
        return list(targets)


def stream_of(shards: Path, micro: int, **kwargs) -> ShardStream:
    return ShardStream(shard_urls(pattern(shards)), TaskDataset([], Ids(), {}), micro, keep=lambda r: True,
                       seed=kwargs.pop("seed", 3), **kwargs)


def epoch_of(stream: ShardStream, index: int, streams: int) -> list[str]:
    records = stream.records(index, streams)
    ids = []
    for epoch, record in records:
        if epoch:
            return ids
        ids.append(record["id"])


@pytest.mark.parametrize("streams", [1, 2, 4, 5, 8])  # 8: more streams than shards, split by sample
def test_streams_split_an_epoch_with_each_sample_once(shards, streams):
    stream = stream_of(shards, 4)
    parts = [epoch_of(stream, s, streams) for s in range(streams)]
    seen = Counter(i for part in parts for i in part)
    assert len(seen) == 96 and set(seen.values()) == {1}
    if streams == 8:
        assert sorted(map(len, parts)) == [12] * 8
    # the next epoch reads the shards in another order
    if streams == 1:
        after = itertools.dropwhile(lambda item: item[0] == 0, stream.records(0, 1))
        second = [r["id"] for _, r in itertools.islice(after, 40)]
        assert second != parts[0][:40] and len(second) == 40


def test_a_stream_whose_shards_hold_nothing_for_its_task_this_epoch_goes_on(shards):
    # 8 streams, 5 shards: in each epoch some streams' shards are all other tasks' records
    wanted = {r["id"] for r in read_shard_records(pattern(shards), media=False)[:20]}  # the first shard's
    stream = ShardStream(shard_urls(pattern(shards)), TaskDataset([], Ids(), {}), 2,
                         keep=lambda r: r["id"] in wanted, seed=3)
    for index in range(5):
        got = [r["id"] for _, r in itertools.islice(stream.records(index, 5), 30)]
        assert len(got) == 30 and set(got) <= wanted  # it waited for the epochs that give it that shard
    never = ShardStream(shard_urls(pattern(shards)), TaskDataset([], Ids(), {}), 2, keep=lambda r: False, seed=3)
    with pytest.raises(DataError, match="found no sample its task can use in 100 epochs"):
        next(never.records(0, 5))


def test_the_buffer_shuffles_within_a_permutation(shards):
    stream = stream_of(shards, 4, buffer=16)
    shuffled = stream.shuffled(0, 1)
    emitted = [pool[index]["id"] for pool, index, _, _ in (next(shuffled) for _ in range(96 - 16))]
    plain = epoch_of(stream, 0, 1)
    assert len(set(emitted)) == 80 and set(emitted) <= set(plain)
    assert emitted != plain[:80]  # shuffled
    # a sample leaves at most buffer - 1 places ... and no later than its place in the reading plus the rest
    place = {i: plain.index(i) for i in emitted}
    assert all(place[i] <= k + 16 for k, i in enumerate(emitted))


def batches(stream: ShardStream, workers: int, count: int) -> list[list[str]]:
    loader = iter(DataLoader(stream, batch_size=None, num_workers=workers))
    return [next(loader)["target"] for _ in range(count)]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_resumed_stream_gives_the_batches_of_an_uninterrupted_one(shards, workers):
    whole = batches(stream_of(shards, 4, buffer=8), workers, 9)
    for start in (1, 4, 5):
        assert batches(stream_of(shards, 4, buffer=8, start=start), workers, 9 - start) == whole[start:]
    assert len({i for b in whole for i in b}) > 30  # 36 samples over 2 streams' shards: few repeats


def test_two_processes_read_disjoint_samples(shards):
    # within the first epoch (each process's 2 or 3 shards hold 36 samples or more; 24 are read)
    first = [i for b in batches(stream_of(shards, 4, rank=0, world_size=2, buffer=4), 0, 5) for i in b]
    second = [i for b in batches(stream_of(shards, 4, rank=1, world_size=2, buffer=4), 0, 5) for i in b]
    assert not set(first) & set(second)


def losses(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_training_streams_shards_learns_and_resumes_exactly(shapes_data, shards, tmp_path):
    config = tiny_config(shapes_data, "vqa", max_steps=6, ckpt_every=2)
    config["data"].update(train=pattern(shards), shuffle_buffer=16, num_workers=2)
    config = load_config(write_config(tmp_path, config))
    full = Trainer(config, tmp_path / "full", **QUIET)
    assert full.train_records["vqa"][0]["image"].endswith(".image.png")  # only the text was read up front
    full.fit()
    Trainer(config, tmp_path / "cut", stop_at=3, **QUIET).fit()
    assert [p.name for p in list_checkpoints(tmp_path / "cut" / "checkpoints")] == ["step_000002"]
    Trainer(config, tmp_path / "cut", resume=True, **QUIET).fit()
    assert sorted(losses(tmp_path / "cut")) == list(range(1, 7))
    assert losses(tmp_path / "cut") == losses(tmp_path / "full")


def test_streamed_training_reaches_the_manifest_runs_accuracy(shapes_data, shards, tmp_path):
    accuracy = {}
    for name, train in [("manifest", str(shapes_data / "train.jsonl")), ("shards", pattern(shards))]:
        config = tiny_config(shapes_data, "vqa", max_steps=120, ckpt_every=1000, log_every=20)
        config["data"].update(train=train, shuffle_buffer=32, num_workers=0)
        Trainer(load_config(write_config(tmp_path, config, f"{name}.yaml")), tmp_path / name, **QUIET).fit()
        rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        accuracy[name] = [r for r in rows if "val" in r][-1]["val"]["vqa"]["accuracy"]
    answers = Counter(r["answer"] for r in read_manifest(shapes_data / "val.jsonl"))
    majority = max(answers.values()) / sum(answers.values())
    # the same data in another order: well above one answer for all, and the manifest run's skill within noise
    assert accuracy["shards"] > majority + 0.25, (accuracy, majority)
    assert abs(accuracy["shards"] - accuracy["manifest"]) <= 0.15, accuracy


def test_the_shard_command_writes_shards_a_config_trains_from(shapes_data, tmp_path):
    done = subprocess.run([sys.executable, "-m", "polymodal.cli", "data", "shard", str(shapes_data / "val.jsonl"),
                           "--out", str(tmp_path / "s"), "--shard-size", "10"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f'train: "{tmp_path / "s" / "shard-{000000..000003}.tar"}"' in done.stdout
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        "shard-000000.tar", "shard-000001.tar", "shard-000002.tar", "shard-000003.tar", "shards.json"]
    bad = subprocess.run([sys.executable, "-m", "polymodal.cli", "data", "shard", str(tmp_path / "none.jsonl"),
                          "--out", str(tmp_path / "t")], capture_output=True, text=True)
    assert bad.returncode == 1 and "manifest not found" in bad.stderr
