"""The `polymodal` command end to end on the built-in data, and its answers to bad input."""

import json
import shutil
import subprocess
import sys

import pytest

from conftest import tiny_config, write_config
from polymodal.api import load
from polymodal.data.manifest import read_manifest


def polymodal(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "polymodal.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd)


def test_synth_check_train_eval_predict(tmp_path):
    data = tmp_path / "data"
    r = polymodal("synth", "--out", data, "--n-train", 64, "--n-val", 16, "--n-test", 16, "--image-size", 32)
    assert r.returncode == 0, r.stderr
    assert "majority" in r.stdout
    r = polymodal("data", "check", data / "train.jsonl")
    assert r.returncode == 0 and "ok, 64 records" in r.stdout
    assert "records without" not in r.stdout  # every record has its image and caption
    lines = (data / "train.jsonl").read_text().splitlines()
    blind = [json.dumps({k: v for k, v in json.loads(line).items() if k != "image"}) for line in lines[:5]]
    (data / "partial.jsonl").write_text("\n".join(blind + lines[5:]) + "\n")
    r = polymodal("data", "check", data / "partial.jsonl")
    assert r.returncode == 0 and "ok, 64 records" in r.stdout and "records without image: 5" in r.stdout, r.stdout
    config = write_config(tmp_path, tiny_config(data, "vqa", max_steps=4))
    run = tmp_path / "run"
    r = polymodal("train", config, "--out", run, "--set", f"data.train={data / 'train.jsonl'}")
    assert r.returncode == 0, r.stderr
    for name in ("config.yaml", "metrics.jsonl", "model/model.safetensors", "model/tokenizer.json",
                 "model/vocab.json", "model/config.yaml"):
        assert (run / name).exists(), name
    r = polymodal("eval", run, "--data", data / "test.jsonl", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert set(result) == {"vqa"}
    # the harness's accuracy is the share of questions the API answers right, one by one
    test = [json.loads(line) for line in (data / "test.jsonl").read_text().splitlines()]
    model = load(run)
    right = [model.answer(data / r["image"], r["question"]) == r["answer"] for r in test]
    assert result["vqa"]["accuracy"] == pytest.approx(sum(right) / len(test))
    assert result["vqa"]["n"] == len(test) == 16
    count = [ok for r, ok in zip(test, right) if r["question_type"] == "count"]
    assert result["vqa"]["accuracy/count"] == pytest.approx(sum(count) / len(count))
    # without the images: every question is still asked (the image a learned placeholder), answered blind
    r = polymodal("eval", run, "--data", data / "test.jsonl", "--json", "--drop-modality", "image")
    assert r.returncode == 0, r.stderr
    blind = json.loads(r.stdout)["vqa"]
    right = [model.answer(None, r["question"]) == r["answer"] for r in test]
    assert blind["n"] == 16 and blind["accuracy"] == pytest.approx(sum(right) / len(test))
    r = polymodal("eval", run, "--data", data / "test.jsonl", "--drop-modality", "smell")
    assert r.returncode == 1 and "--drop-modality: this model has no 'smell' encoder; it has: image, text" in r.stderr
    record = json.loads((data / "test.jsonl").read_text().splitlines()[0])
    picture = tmp_path / "explained.png"
    r = polymodal("predict", run, "--image", data / record["image"], "--question", record["question"], "--json",
                  "--explain", picture)
    assert r.returncode == 0, r.stderr
    vocab = json.loads((run / "model" / "vocab.json").read_text())["vqa"]
    assert json.loads(r.stdout)["answer"] in vocab
    assert json.loads(r.stdout)["explanation"] == str(picture) and picture.stat().st_size > 10_000


@pytest.fixture()
def broken_data(shapes_data, tmp_path):
    """A copy of the tiny benchmark whose train manifest has a bad JSON line and a missing image."""
    data = tmp_path / "broken"
    shutil.copytree(shapes_data, data)
    lines = (data / "train.jsonl").read_text().splitlines()
    lines[2] = '{"id": "oops", "image": '
    bad = json.loads(lines[5])
    bad["image"] = "images/train/missing.png"
    lines[5] = json.dumps(bad)
    (data / "train.jsonl").write_text("\n".join(lines) + "\n")
    return data


def test_data_check_reports_every_problem(broken_data):
    r = polymodal("data", "check", broken_data / "train.jsonl")
    assert r.returncode == 1
    assert "train.jsonl:3" in r.stdout and "JSON" in r.stdout
    assert "train.jsonl:6" in r.stdout and "missing.png" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr


def test_train_refuses_bad_manifest_unless_skip(broken_data, tmp_path):
    config = write_config(tmp_path, tiny_config(broken_data, "vqa", max_steps=2))
    r = polymodal("train", config, "--out", tmp_path / "run")
    assert r.returncode == 1
    assert "train.jsonl:3" in r.stderr and "missing.png" in r.stderr and "on_error: skip" in r.stderr
    assert "Traceback" not in r.stderr
    r = polymodal("train", config, "--out", tmp_path / "run", "--set", "data.on_error=skip")
    assert r.returncode == 0, r.stderr
    assert "skipped 2 of 96" in r.stdout


@pytest.mark.parametrize("override, needle", [
    ("model.encoders.image.chanels=[8]", "model.encoders.image: unknown key 'chanels'; allowed keys: "),
    ("tasks.vqa.hiden=3", "tasks.vqa: unknown key 'hiden'; allowed keys: data, dropout, hidden, inputs, more_questions, own_question_share, weight"),
    ("model.type=dual", "model.type: expected one of dual_encoder, joint_transformer"),
    ("model.encoders.smell.type=x", "unknown modality 'smell'; known: audio, image, text, video"),
    ("model.encoders.video.type=x", "model.encoders.video.type: expected one of conv3d, frames, tokenizer, tubelet_vit"),
    ("train.lr=fast", "train.lr: expected a number"),
    ("model.encoders.image.channels=[6]", "model.encoders.image: groups=8 does not divide channels=6"),
])
def test_bad_config_names_the_key(shapes_data, tmp_path, override, needle):
    config = write_config(tmp_path, tiny_config(shapes_data, "vqa", max_steps=2))
    r = polymodal("train", config, "--out", tmp_path / "run", "--set", override)
    assert r.returncode == 1
    assert needle in r.stderr
    assert "Traceback" not in r.stderr


def test_video_and_audio_tasks_train_from_synthesised_clips(tmp_path):
    data = tmp_path / "data"
    r = polymodal("synth", "--out", data, "--modalities", "video,audio,text", "--n-clips", 48)
    assert r.returncode == 0, r.stderr
    av = data / "av"
    r = polymodal("data", "check", av / "train.jsonl")
    assert r.returncode == 0 and "ok, 48 records" in r.stdout, r.stdout + r.stderr
    audio = {"sample_rate": 16000, "duration": 2.0, "n_mels": 32, "hop_length": 320}
    config = {
        "model": {"type": "joint_transformer", "width": 32, "depth": 1, "num_heads": 2, "encoders": {
            "video": {"type": "frames", "image_size": 32, "num_frames": 4, "num_heads": 2, "fps": 4.0,
                      "frame": {"type": "cnn", "channels": [8, 16]},
                      "audio": {"type": "conv", "channels": [16], **audio}},
            "audio": {"type": "conv", "channels": [16], **audio},
            "text": {"type": "gru", "width": 32, "max_length": 16}},
            "tokenizer": {"vocab_size": 120}},
        "tasks": {"video_qa": {"type": "vqa", "hidden": 32, "inputs": {"video": "video", "text": "question"}},
                  "sound": {"type": "classification", "hidden": 0, "inputs": {"audio": "audio"}},
                  "av_match": {"type": "matching", "hidden": 16}},
        "data": {"train": str(av / "train.jsonl"), "val": str(av / "val.jsonl")},
        "train": {"max_steps": 3, "batch_size": 8, "log_every": 1, "ckpt_every": 100},
    }
    path = write_config(tmp_path, config)
    run = tmp_path / "run"
    r = polymodal("train", path, "--out", run)
    assert r.returncode == 0, r.stderr
    r = polymodal("eval", run, "--data", av / "test.jsonl", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert {"accuracy/temporal", "accuracy/sound", "accuracy/audiovisual"} <= set(result["video_qa"])
    test = [json.loads(line) for line in (av / "test.jsonl").read_text().splitlines()]
    model = load(run)
    right = [model.classify(audio=av / r["audio"]) == r["label"] for r in test]
    assert result["sound"]["accuracy"] == pytest.approx(sum(right) / len(test))
    # held-out pairs: even items keep their own sound, odd ones get another clip's
    probabilities = model.predict("av_match", read_manifest(av / "test.jsonl"))
    right = [(p >= 0.5) == (i % 2 == 0) for i, p in enumerate(probabilities)]
    assert result["av_match"]["accuracy"] == pytest.approx(sum(right) / len(test))
    record = json.loads((av / "test.jsonl").read_text().splitlines()[0])
    r = polymodal("predict", run, "--video", av / record["video"], "--question", record["question"], "--json")
    assert r.returncode == 0, r.stderr
    vocab = json.loads((run / "model" / "vocab.json").read_text())
    assert json.loads(r.stdout)["answer"] in vocab["video_qa"]
    r = polymodal("predict", run, "--audio", av / record["audio"], "--json")  # the sound classifier
    assert r.returncode == 0 and json.loads(r.stdout)["label"] in vocab["sound"], r.stderr
    r = polymodal("predict", run, "--video", av / record["video"])  # no question: the sound classifier, no audio
    assert r.returncode == 1 and "task 'sound' reads audio; missing: audio" in r.stderr, r.stderr
    # the clip's question without the clip: video QA can do without its video (a learned placeholder)
    r = polymodal("predict", run, "--question", record["question"], "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["answer"] in vocab["video_qa"], r.stderr
