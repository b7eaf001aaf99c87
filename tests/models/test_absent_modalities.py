"""Missing modalities: a record may lack what a task can do without; the example then gets a learned
placeholder, the same in any batch and whatever the filler; modality dropout in training."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_config, write_config
from polymodal.builders import build_system
from polymodal.config import load_config
from polymodal.data.loader import TaskDataset, collate_present
from polymodal.data.manifest import read_manifest
from polymodal.fusion import FUSIONS
from polymodal.tasks.vqa import VQAData

FUSION_OPTIONS = {"early": {"depth": 1, "num_heads": 2}, "cross": {"depth": 1, "num_heads": 2},
                  "coattn": {"depth": 1, "num_heads": 2}, "gated_cross_attention": {"depth": 1, "num_heads": 2},
                  "perceiver": {"depth": 1, "num_heads": 2, "num_latents": 4}}


class _Stack:
    def collate(self, items):
        return {"data": torch.stack(items)}


def test_collation_marks_who_lacks_the_modality():
    a, b = torch.ones(2), 2 * torch.ones(2)
    assert collate_present(_Stack(), [a, b]).keys() == {"data"}  # everyone has it: the batch is as before
    mixed = collate_present(_Stack(), [a, None, b])
    assert mixed["present"].tolist() == [True, False, True]
    assert torch.equal(mixed["data"][1], a)  # a filler, never read
    assert collate_present(_Stack(), [None, None]).keys() == {"present"}


def test_vqa_needs_its_question_and_answer_not_its_image():
    task = VQAData(vocab=["yes"])
    assert task.usable({"question": "q", "answer": "yes"})
    assert not task.usable({"image": "a.png", "answer": "yes"})
    assert not task.usable({"image": "a.png", "question": "q"})


@pytest.fixture(scope="module")
def records(shapes_data):
    return read_manifest(shapes_data / "train.jsonl", log=lambda _: None)


def system_with(shapes_data, tmp_path_factory, fusion):
    config = tiny_config(shapes_data, "vqa")
    del config["model"]["type"], config["model"]["depth"], config["model"]["num_heads"]
    config["model"]["fusion"] = {"type": fusion, **FUSION_OPTIONS.get(fusion, {})}
    config = load_config(write_config(tmp_path_factory.mktemp("c"), config))
    torch.manual_seed(0)
    system = build_system(config, read_manifest(config.data.train, log=lambda _: None))
    with torch.no_grad():  # gates open, as training leaves them (they start shut)
        for name, p in system.model.named_parameters():
            if name.endswith("gate"):
                p.fill_(0.5)
    return system.model.eval(), system


@pytest.mark.parametrize("fusion", sorted(FUSIONS))
def test_an_absent_image_gives_the_same_answer_in_any_batch_and_with_any_filler(shapes_data, tmp_path_factory,
                                                                                 records, fusion):
    model, system = system_with(shapes_data, tmp_path_factory, fusion)
    task = model.tasks["vqa"].data
    blind = [{k: v for k, v in r.items() if k != "image"} for r in records[:2]]
    data = TaskDataset([*blind, *records[2:5]], task, system.processors)
    with torch.no_grad():
        mixed = model.encode(data.collate([data[i] for i in range(5)])["inputs"])
        alone = model.encode(data.collate([data[0]])["inputs"])  # the image absent from the whole batch
        swapped = TaskDataset([blind[0], records[4], records[3]], task, system.processors)  # another filler
        other = model.encode(swapped.collate([swapped[i] for i in range(3)])["inputs"])
    assert mixed.modalities["image"].present.tolist() == [False, False, True, True, True]
    torch.testing.assert_close(mixed.pooled[0], alone.pooled[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(mixed.pooled[0], other.pooled[0], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(mixed.pooled[0], mixed.pooled[2], atol=1e-3)  # the image matters when there


def test_the_placeholder_learns_from_examples_that_lack_the_modality(shapes_data, tmp_path_factory, records):
    model, system = system_with(shapes_data, tmp_path_factory, "early")
    model.train()
    task = model.tasks["vqa"].data
    data = TaskDataset([{k: v for k, v in records[0].items() if k != "image"}, records[1]], task, system.processors)
    batch = data.collate([data[0], data[1]])
    model({"vqa": batch})["vqa"]["loss"].backward()
    grads = {n: p.grad for n, p in model.named_parameters() if n.startswith("backbone.absent.")}
    assert grads["backbone.absent.vectors.image"].abs().sum() > 0
    assert grads["backbone.absent.vectors.text"] is None or grads["backbone.absent.vectors.text"].abs().sum() == 0


class _Echo:
    def prepare(self, value, generator):
        return value

    def collate(self, items):
        return {"data": items}


def test_modality_dropout_drops_at_its_rate_never_the_required_one_nor_everything():
    task = VQAData(vocab=["yes"], inputs={"image": "image", "audio": "audio", "text": "question"})
    records = [{"image": "i", "audio": "a", "question": "q", "answer": "yes"}] * 2000
    processors = {m: _Echo() for m in ("image", "audio", "text")}
    data = TaskDataset(records, task, processors, seed=3, modality_dropout={"image": 0.3, "audio": 0.5, "text": 0.9})
    draws = [data[0, i]["inputs"] for i in range(2000)]
    assert all(d["text"] == "q" for d in draws)  # VQA cannot do without its question
    image_rate = sum(d["image"] is None for d in draws) / 2000
    audio_rate = sum(d["audio"] is None for d in draws) / 2000
    assert abs(image_rate - 0.3) < 0.05 and abs(audio_rate - 0.5) < 0.05
    assert [data[0, 7]["inputs"] for _ in range(2)] == [draws[7]] * 2  # seeded by (epoch, index)
    assert all(d["image"] == "i" and d["audio"] == "a" for d in (data[i]["inputs"] for i in range(20)))  # eval
    only_image = TaskDataset([{"image": "i", "label": "x"}] * 50, _classifier(), {"image": _Echo()}, seed=0,
                             modality_dropout={"image": 0.9})
    assert all(only_image[0, i]["inputs"]["image"] == "i" for i in range(50))  # never every input


def _classifier():
    from polymodal.tasks.classification import ClassificationData
    return ClassificationData(vocab=["x"])


def test_training_with_records_lacking_images_and_modality_dropout(shapes_data, tmp_path, records):
    from polymodal.training.trainer import Trainer

    lines = []
    config = tiny_config(shapes_data, "vqa", max_steps=3, modality_dropout={"image": 0.5})
    trainer = Trainer(load_config(write_config(tmp_path, config)), tmp_path / "run", log=lines.append)
    assert trainer.train_step()["loss"] > 0
    bad = tiny_config(shapes_data, "vqa", modality_dropout={"smell": 0.5})
    from polymodal.errors import ConfigError
    with pytest.raises(ConfigError, match="train.modality_dropout.smell: this model has no 'smell' encoder"):
        Trainer(load_config(write_config(tmp_path, bad, "b.yaml")), tmp_path / "run2", log=lines.append)
    worse = tiny_config(shapes_data, "vqa", modality_dropout={"image": 1.0})
    with pytest.raises(ConfigError, match="train.modality_dropout.image: expected a chance from 0 to below 1"):
        Trainer(load_config(write_config(tmp_path, worse, "c.yaml")), tmp_path / "run3", log=lines.append)


def test_an_input_the_encoder_does_not_take_is_a_clear_error():
    from polymodal.models.absent import AbsentModalities
    from polymodal.models.encoding import encode_all, encoder_inputs
    from polymodal.modalities.image.encoders import CNNImageEncoder
    from polymodal.modalities.text.recurrent import RecurrentTextEncoder
    from polymodal.modalities.video.encoders import FrameEncoder

    assert encoder_inputs(RecurrentTextEncoder) == (("mask",), ())
    assert encoder_inputs(FrameEncoder) == ((), ("audio",))
    assert encoder_inputs(CNNImageEncoder) == ((), ("token_mask",))  # masked modelling's, optional
    encoders = torch.nn.ModuleDict({"image": CNNImageEncoder(out_dim=8, image_size=16, channels=[4, 8], groups=4)})
    absent = AbsentModalities(["image"], 8)
    images = torch.randn(2, 3, 16, 16)
    with pytest.raises(ValueError, match=r"the image encoder \(CNNImageEncoder\) takes the data and token_mask; "
                                         r"the batch gives mask"):
        encode_all(encoders, {"image": {"data": images, "mask": torch.ones(2, 4, dtype=torch.bool)}}, absent)
    assert encode_all(encoders, {"image": {"data": images}}, absent)["image"].pooled.shape == (2, 8)
