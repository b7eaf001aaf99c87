"""Captioning end to end: a small encoder-decoder learns the shapes captions; the API, `predict` and
`eval --json` give the generated text and its metrics."""

import json
import subprocess
import sys
from dataclasses import replace

import pytest

from polymodal.api import load
from polymodal.config import load_config
from polymodal.data.manifest import read_manifest
from polymodal.training.trainer import train
from tests.conftest import write_config


def caption_config(data, steps=300):
    return {
        "model": {"fusion": {"type": "late"}, "width": 32,
                  "encoders": {"image": {"type": "cnn", "image_size": 32, "channels": [16, 32],
                                         "positions": "sinusoidal2d"}},
                  "decoder": {"type": "transformer", "width": 32, "depth": 1, "num_heads": 2, "max_length": 24},
                  "tokenizer": {"vocab_size": 200}},
        "tasks": {"caption": {"type": "caption", "max_length": 20}},
        "data": {"train": str(data / "train.jsonl"), "val": str(data / "val.jsonl")},
        "train": {"max_steps": steps, "batch_size": 32, "lr": 1e-2, "warmup_steps": 20, "log_every": 1,
                  "progress": False},
    }


@pytest.fixture(scope="module")
def caption_run(shapes_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("caption")
    run = folder / "run"
    train(load_config(write_config(folder, caption_config(shapes_data))), run)
    return run


def test_the_decoder_learns_the_training_captions(caption_run, shapes_data):
    """Memorising 96 captions: the loss falls tenfold and greedy decoding writes most of them exactly."""
    losses = [json.loads(line)["loss"] for line in (caption_run / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert losses[-1] < losses[0] / 10
    model = load(caption_run)
    records = read_manifest(shapes_data / "train.jsonl")
    scores = model.evaluate(records)["caption"]
    assert scores["exact_match"] >= 0.7 and scores["cider"] >= 6.0 and scores["bleu4"] >= 0.7


def test_caption_api_is_batched(caption_run, shapes_data):
    model = load(caption_run)
    records = read_manifest(shapes_data / "train.jsonl")[:3]
    images = [r["image"] for r in records]
    batch = model.caption(images)
    assert isinstance(batch, list) and len(batch) == 3
    assert model.caption(images[1]) == batch[1]  # one in, one out; the same text as in a batch
    assert model.caption(images, cache="static") == batch  # a static KV cache: the same tokens
    assert model.caption(images, cache="static", num_beams=3) == model.caption(images, num_beams=3)
    head = model.system.model.tasks["caption"]
    greedy_settings, head.generation = head.generation, replace(head.generation, num_beams=3)
    assert model.caption(images, num_beams=3) == model.predict("caption", records)  # API and harness agree
    head.generation = greedy_settings
    sampled = model.generate(images=images, sample=True, top_p=0.9, seed=1)
    assert sampled == model.generate(images=images, sample=True, top_p=0.9, seed=1)  # seeded
    assert model.generate(images=images, sample=True, top_k=1, seed=5) == batch  # top-1 sampling is greedy
    hot = [model.generate(images=images, sample=True, temperature=3.0, seed=s) for s in (1, 2)]
    assert hot[0] != hot[1] and hot[0] != batch  # the seed and the temperature are used


def test_predict_and_eval_json(caption_run, shapes_data):
    record = read_manifest(shapes_data / "train.jsonl")[0]
    run = lambda *args: subprocess.run([sys.executable, "-m", "polymodal.cli", *map(str, args)],  # noqa: E731
                                       capture_output=True, text=True)
    out = run("predict", caption_run, "--image", record["image"], "--beam", "2", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["text"] == load(caption_run).caption(record["image"], num_beams=2)
    out = run("eval", caption_run, "--data", shapes_data / "val.jsonl", "--json")
    assert out.returncode == 0, out.stderr
    scores = json.loads(out.stdout)["caption"]
    assert set(scores) == {"bleu4", "cider", "exact_match", "n"}
    expected = load(caption_run).evaluate(read_manifest(shapes_data / "val.jsonl"))["caption"]
    assert scores == pytest.approx(expected, abs=1e-9)


def test_generative_vqa_answers_in_free_text(shapes_data, tmp_path):
    config = caption_config(shapes_data, steps=3)
    config["model"]["encoders"]["text"] = {"type": "gru", "width": 32, "max_length": 24}
    config["model"]["fusion"] = {"type": "early", "depth": 1, "num_heads": 2}
    config["model"]["decoder"]["memory"] = "fused"
    config["tasks"] = {"vqa": {"type": "vqa_generative", "max_length": 6}}
    run = tmp_path / "run"
    train(load_config(write_config(tmp_path, config)), run)
    model = load(run)
    records = read_manifest(shapes_data / "val.jsonl")
    scores = model.evaluate(records)["vqa"]
    assert {"accuracy", "accuracy/attribute", "accuracy/spatial"} <= set(scores)
    record = records[0]
    answer = model.answer(record["image"], record["question"])
    assert isinstance(answer, str)
    assert answer == model.predict("vqa", [record])[0]  # the API asks what the harness asks
