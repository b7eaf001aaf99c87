"""Every registered task is two parts: a data side without parameters (what loader workers hold) and a
head; each config key reaches the part whose constructor takes it."""

import pickle

import pytest
import torch
from torch import nn

import hf_folders
from conftest import TINY_ENCODERS
from polymodal.builders import build_system
from polymodal.config import from_dict
from polymodal.data.loader import TaskDataset
from polymodal.data.manifest import read_manifest
from polymodal.errors import ConfigError
from polymodal.tasks import TASKS, TaskData

TASK_EXTRAS = {"matching": {"inputs": {"image": "image", "text": "text"}},
               "transcription": {"inputs": {"image": "image"}},  # (the shapes data has no sound)
               "ctc": {"inputs": {"image": "image"}},
               "distill": {"teacher": {"type": "hf", "path": str(hf_folders.bert())}}}  # a tiny random BERT
DECODER = {"type": "transformer", "width": 32, "depth": 1, "num_heads": 2, "max_length": 40}
# a task that needs an encoder of another type than the tiny ones: an image tokenizer's for reconstruction
TASK_ENCODERS = {"reconstruction": {**TINY_ENCODERS, "image": {"type": "tokenizer", "image_size": 32, "downsample": 8,
                                                               "channels": [8, 8, 8, 16]}}}


# generation tasks: the modality they make, the fixture of its trained tokenizer and of data to make it from
MAKERS = {"text_to_image": ("image", "tokenizer_run", "shapes_data", "train.jsonl"),
          "text_to_audio": ("audio", "audio_tokenizer_run", "sound_data", "sound-train.jsonl"),
          "text_to_video": ("video", "video_tokenizer_run", "clip_data", "clip-train.jsonl")}


def build(data, task_type, model=None, manifest="train.jsonl", **options):
    decoder = {"decoder": DECODER} if "decoder" in TASKS[task_type].needs else {}
    config = from_dict({
        "model": {"fusion": {"type": "late"}, "embed_dim": 16, "width": 32,
                  "encoders": TASK_ENCODERS.get(task_type, TINY_ENCODERS),
                  "tokenizer": {"vocab_size": 200}, **decoder, **(model or {})},
        "tasks": {"t": {"type": task_type, **TASK_EXTRAS.get(task_type, {}), **options}},
        "data": {}, "train": {},
    }, data)
    return build_system(config, read_manifest(data / manifest))


@pytest.mark.parametrize("task_type", sorted(TASKS))
def test_the_data_side_holds_no_parameters_and_travels_to_workers_alone(shapes_data, task_type, request):
    # text to image (sound) draws with a trained image (sound) tokenizer's codes and a decoder-only LM
    model, data, manifest = None, shapes_data, "train.jsonl"
    if task_type in MAKERS:
        modality, run, data_fixture, manifest = MAKERS[task_type]
        model = {"width": 64, "encoders": {modality: {"type": "tokenizer", "path": str(request.getfixturevalue(run))}},
                 "decoder": {**DECODER, "architecture": "decoder_only", "max_length": 288}}
        data = request.getfixturevalue(data_fixture)
    system = build(data, task_type, model, manifest=manifest)
    task = system.model.tasks["t"]
    assert isinstance(task.data, task.data_class) and issubclass(task.data_class, TaskData)
    assert not isinstance(task.data, nn.Module)
    assert not any(isinstance(v, (nn.Module, torch.Tensor)) for v in vars(task.data).values())
    records = read_manifest(data / manifest)[:8]
    copy = pickle.loads(pickle.dumps(task.data))  # what a DataLoader worker receives
    generator = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    assert [copy.example(records, i, generator()) for i in range(8)] == \
        [task.data.example(records, i, generator()) for i in range(8)]
    dataset = TaskDataset(records, copy, system.processors)
    batch = dataset.collate([dataset[i] for i in range(8)])
    assert torch.isfinite(system.model({"t": batch})["t"]["loss"])  # the head takes what the data side collates


def test_each_key_reaches_its_part_and_an_unknown_one_lists_both(shapes_data):
    task = build(shapes_data, "vqa", hidden=16, own_question_share=0.5, more_questions="more", weight=2.0).model.tasks["t"]
    assert task.data.own_question_share == 0.5 and task.data.more_questions == "more"  # data side
    assert task.weight == 2.0 and task.head[1].out_features == 16  # head
    with pytest.raises(ConfigError, match="tasks.t: unknown key 'hiden'; allowed keys: data, dropout, hidden, inputs, "
                                          "more_questions, own_question_share, weight"):
        build(shapes_data, "vqa", hiden=16)
    with pytest.raises(ConfigError, match=r"tasks.t.own_question_share: expected a number from 0 to 1"):
        build(shapes_data, "vqa", own_question_share=2.0)
    with pytest.raises(TypeError, match="TaskDataset takes a task's data side"):
        TaskDataset([], task, {})


def test_a_data_side_may_collate_ragged_targets():
    class Ragged(TaskData):
        inputs = {"text": "text"}

        def target(self, record):
            return [len(w) for w in record["text"].split()]

        def collate_targets(self, targets):
            out = torch.full((len(targets), max(map(len, targets))), -100)
            for row, t in zip(out, targets):
                row[:len(t)] = torch.tensor(t)
            return out

    class Echo:
        def prepare(self, value, generator):
            return value

        def collate(self, items):
            return {"data": items}

    records = [{"text": "a red circle"}, {"text": "two"}]
    dataset = TaskDataset(records, Ragged(), {"text": Echo()})
    batch = dataset.collate([dataset[0], dataset[1]])
    assert batch["target"].tolist() == [[1, 3, 6], [3, -100, -100]]
