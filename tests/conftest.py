"""Shared fixtures: a tiny copy of the built-in benchmark and tiny model configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from polymodal.data.shapes import synthesize

TINY_ENCODERS = {
    "image": {"type": "cnn", "image_size": 32, "channels": [8, 16]},
    "text": {"type": "transformer", "width": 32, "depth": 1, "num_heads": 2, "max_length": 24},
}


@pytest.fixture(scope="session")
def shapes_data(tmp_path_factory) -> Path:
    """A small shapes benchmark: 96 train, 32 val, 32 test records at 32 px."""
    out = tmp_path_factory.mktemp("shapes")
    synthesize(out, n_train=96, n_val=32, n_test=32, seed=1, image_size=32, log=lambda _: None)
    return out


@pytest.fixture(scope="session")
def speech_data(tmp_path_factory) -> Path:
    """A tiny spoken-digits set by espeak-ng (`synth --modalities speech`'s): {train,val,test,words}.jsonl,
    24 / 8 / 8 / 8 utterances; skips where espeak-ng is not installed (.ci/run installs it)."""
    import shutil

    from polymodal.data.spoken_digits import SpeechSettings, synthesize_speech

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng; .ci/run installs it)")
    out = tmp_path_factory.mktemp("speech")
    settings = SpeechSettings(n_train=24, n_val=8, n_test=8, n_words=8, utterances_per_speaker=4)
    return synthesize_speech(out / "speech", settings, workers=1, log=lambda _: None)


@pytest.fixture(scope="session")
def tokenizer_run(tmp_path_factory, shapes_data) -> Path:
    """A trained image tokenizer (the shipped recipe, two steps on the tiny benchmark): what a config
    that draws images (`model.encoders.image.path`) reads as its stage 1."""
    return _two_steps("tokenizer-image.yaml", shapes_data, "", tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def sound_data(tmp_path_factory) -> Path:
    """A small set of prompted sounds (`synth --generation`'s): sound-{train,val,test}.jsonl, 24 / 8 / 8."""
    from polymodal.data.sound_generation import synthesize_sound_generation

    out = tmp_path_factory.mktemp("sounds")
    synthesize_sound_generation(out, n_train=24, n_val=8, n_test=8, n_heldout=0, log=lambda _: None)
    return out


@pytest.fixture(scope="session")
def audio_tokenizer_run(tmp_path_factory, sound_data) -> Path:
    """A trained sound tokenizer (the shipped recipe, two steps): what a config that makes sounds
    (`model.encoders.audio.path`) reads as its stage 1."""
    return _two_steps("tokenizer-audio.yaml", sound_data, "sound-", tmp_path_factory.mktemp("audio-tokenizer"))


def _two_steps(config_name: str, data: Path, prefix: str, folder: Path, batch_size: int = 8) -> Path:
    """A shipped tokenizer recipe trained two steps on `data`'s `{prefix}{split}.jsonl`: its run."""
    from polymodal.config import load_config
    from polymodal.training.trainer import train

    config = Path(__file__).parents[1] / "src" / "polymodal" / "configs" / config_name
    train(load_config(config, [f"data.{s}={data / f'{prefix}{s}.jsonl'}" for s in ("train", "val", "test")]
                      + ["train.max_steps=2", f"train.batch_size={batch_size}", "train.val_every=0",
                         "data.num_workers=0"]), folder / "run", log=lambda _: None)
    return folder / "run"


@pytest.fixture(scope="session")
def clip_data(tmp_path_factory) -> Path:
    """A small set of prompted clips (`synth --generation`'s): clip-{train,val,test}.jsonl, 24 / 8 / 8."""
    from polymodal.data.video_generation import synthesize_video_generation

    out = tmp_path_factory.mktemp("clips")
    synthesize_video_generation(out, n_train=24, n_val=8, n_test=8, n_heldout=0, log=lambda _: None)
    return out


@pytest.fixture(scope="session")
def video_tokenizer_run(tmp_path_factory, clip_data) -> Path:
    """A trained video tokenizer (the shipped recipe, two steps): what a config that makes clips reads."""
    return _two_steps("tokenizer-video.yaml", clip_data, "clip-", tmp_path_factory.mktemp("video-tokenizer"), 4)


GENERATION_PREFIXES = {"audio": "sound-", "video": "clip-"}  # a tokenizer's modality → its prompted data's manifests


def generation_prefix(config_path: Path) -> str:
    """The manifests' prefix of the prompted data a shipped config trains on ("sound-", "clip-"), or "" for
    the usual ones: configs with a sound or video tokenizer read the prompted sounds or clips."""
    raw = yaml.safe_load(Path(config_path).read_text())
    encoders = raw["model"]["encoders"]
    return next((prefix for modality, prefix in GENERATION_PREFIXES.items()
                 if (encoders.get(modality) or {}).get("type") == "tokenizer"), "")


def stage_one(config_path: Path, tokenizer_run: Path | dict[str, Path]) -> list[str]:
    """Overrides pointing a shipped config's trained tokenizers (`path:` of a `type: tokenizer` encoder)
    at `tokenizer_run` (one run for all, or one per modality: {"image": RUN, "audio": RUN})."""
    raw = yaml.safe_load(Path(config_path).read_text())
    runs = tokenizer_run if isinstance(tokenizer_run, dict) else None
    return [f"model.encoders.{name}.path={runs[name] if runs else tokenizer_run}"
            for name, spec in raw["model"]["encoders"].items()
            if isinstance(spec, dict) and spec.get("type") == "tokenizer" and "path" in spec]


def own_task_data(config_path: Path, data: Path, prefix: str = "") -> list[str]:
    """Overrides pointing each task's own manifests (`tasks.NAME.data`, as any-to-any's caption task has)
    at `data`'s `{prefix}{split}.jsonl`."""
    raw = yaml.safe_load(Path(config_path).read_text())
    return [f"tasks.{name}.data.{split}={data / f'{prefix}{split}.jsonl'}"
            for name, task in raw["tasks"].items() if isinstance(task, dict) and "data" in task
            for split in ("train", "val", "test")]


def logged_losses(run: Path) -> list[float]:
    """The training losses a run logged (metrics.jsonl), in order."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows if "loss" in row]


def tiny_config(data: Path, kind: str = "vqa", **train) -> dict:
    """A tiny config dict: `vqa` (joint transformer) or `clip` (dual encoder)."""
    if kind == "vqa":
        model = {"type": "joint_transformer", "width": 32, "depth": 1, "num_heads": 2, "encoders": TINY_ENCODERS}
        tasks = {"vqa": {"type": "vqa", "hidden": 32}}
    else:
        model = {"type": "dual_encoder", "width": 32, "embed_dim": 16, "encoders": TINY_ENCODERS}
        tasks = {"retrieval": {"type": "contrastive"}}
    return {
        "model": {**model, "tokenizer": {"vocab_size": 200}},
        "tasks": tasks,
        "data": {"train": str(data / "train.jsonl"), "val": str(data / "val.jsonl")},
        "train": {"max_steps": 6, "batch_size": 16, "lr": 3e-3, "warmup_steps": 2, "log_every": 1,
                  "ckpt_every": 3, "progress": False, **train},
    }


def write_config(folder: Path, config: dict, name: str = "config.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(config))
    return path


def record_steps(trainer) -> list[dict]:
    """Wrap the optimiser's step: what it is given (gradients, their norm, the learning rate) each time."""
    seen, step = [], trainer.optimizer.step
    params = [p for p in trainer.model.parameters() if p.requires_grad]

    def recording_step(*args, **kwargs):
        grads = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]
        seen.append({"grads": grads, "norm": torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item(),
                     "lr": [g["lr"] for g in trainer.optimizer.param_groups]})
        return step(*args, **kwargs)

    trainer.optimizer.step = recording_step
    return seen
