"""`train.compile`: every shipped config's step traces into one graph (no graph break), and compiled
training gives the eager losses. The registered encoders and fusions are traced by their contract tests."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
import torch._dynamo as dynamo
from graphs import graph_breaks

from polymodal.builders.decoder import DECODERS
from polymodal.config import load_config
from polymodal.data.manifest import read_manifest
from polymodal.data.shapes_av import synthesize_av
from polymodal.models.tiny_lm import save_tiny_lm
from polymodal.tasks import TASKS
from polymodal.training.trainer import Trainer, train
from tests.conftest import generation_prefix, own_task_data, stage_one

CONFIGS = Path(__file__).parents[2] / "src" / "polymodal" / "configs"
AV = ("shapes-av", "shapes-video", "audio-", "caption-video", "caption-audio")
CONFIGS_NAMES = sorted(p.name for p in CONFIGS.glob("*.yaml"))
# every shipped config, and the registered task types no config ships (a transcription head)
STEPS = [(name, ()) for name in CONFIGS_NAMES] + [("caption-audio.yaml", ("tasks.caption.type=transcription",))]


@pytest.fixture(scope="module")
def av_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("av")
    synthesize_av(out, n_train=16, n_val=8, n_test=8, log=lambda _: None)
    return out / "av"


def _trainer(name: str, shapes_data: Path, av_data: Path, out: Path, *sets: str,
             tokenizer: dict[str, Path] | None = None, generated: dict[str, Path] | None = None) -> Trainer:
    data = av_data if name.startswith(AV) else shapes_data
    prefix = generation_prefix(CONFIGS / name)
    data = (generated or {}).get(prefix, data)  # the prompted sounds or clips
    if name.startswith("transcribe-speech"):
        data = (generated or {})["speech"]
    overrides = [f"data.train={data / f'{prefix}train.jsonl'}", f"data.val={data / f'{prefix}val.jsonl'}",
                 f"data.test={data / f'{prefix}test.jsonl'}", "train.batch_size=4", "train.max_steps=2", "train.val_every=0",
                 "train.init_from=null", "data.num_workers=0", *own_task_data(CONFIGS / name, data, prefix), *sets]
    if tokenizer is not None:
        overrides += stage_one(CONFIGS / name, tokenizer)
    if load_config(CONFIGS / name).model.get("decoder", {}).get("type") == "hf":  # the user's LM: a tiny one
        texts = [r["text"] for r in read_manifest(data / "train.jsonl")]
        overrides.append(f"model.decoder.path={save_tiny_lm(out.parent / 'lm', 'gpt2', texts)}")
    return Trainer(load_config(CONFIGS / name, overrides), out, log=lambda _: None)


def test_every_task_type_and_decoder_is_traced():
    configs = [load_config(CONFIGS / name, list(sets)) for name, sets in STEPS]
    assert {t["type"] for c in configs for t in c.tasks.values()} == set(TASKS)
    assert {c.model.get("decoder", {}).get("type") for c in configs} - {None} == set(DECODERS)


@pytest.mark.parametrize("name, sets", STEPS, ids=lambda v: v if isinstance(v, str) else "-".join(v))
def test_a_training_step_traces_into_one_graph(name, sets, shapes_data, av_data, sound_data, clip_data, tokenizer_run,
                                              audio_tokenizer_run, video_tokenizer_run, tmp_path, request):
    """What `train.compile` compiles, over every shipped config: the model's forward over a step's batches
    (media spliced into an HF causal LM, a distillation teacher's vectors computed before it)."""
    speech = request.getfixturevalue("speech_data") if name.startswith("transcribe-speech") else None
    trainer = _trainer(name, shapes_data, av_data, tmp_path / "run", *sets,
                       generated={"sound-": sound_data, "clip-": clip_data, "speech": speech},
                       tokenizer={"image": tokenizer_run, "audio": audio_tokenizer_run, "video": video_tokenizer_run})
    breaks = graph_breaks(trainer.model, trainer._next_batches(list(trainer.config.tasks)))
    # F.ctc_loss is a dynamic-shape operator to dynamo (torch 2.13): the graph breaks there and the loss runs
    # eagerly on the compiled graph's log-probabilities (one break, at that line, and nowhere else)
    expected = [b for b in breaks if b.startswith("Dynamic shape operator") and "tasks/ctc.py" in b]
    assert breaks == expected and len(expected) == (1 if name.startswith("transcribe-speech") else 0)


@pytest.mark.parametrize("backend, name, short", [
    ("aot_eager", "shapes-vqa", "model.encoders.text.max_length=16"),
    ("aot_eager", "caption-image", "tasks.caption.max_length=16"),  # the decoder's input spliced in place
    ("aot_eager", "llava-tiny", "tasks.caption.max_length=16"),  # image tokens spliced into an HF causal LM
    pytest.param("inductor", "shapes-vqa", "model.encoders.text.max_length=16", marks=pytest.mark.slow)])
def test_compiled_training_gives_the_eager_losses(backend, name, short, shapes_data, tmp_path, monkeypatch):
    """aot_eager traces forward and backward as inductor does, without generating code (3 minutes of C++
    compilation on 2 cores); the slow run checks inductor's code too."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=backend))

    lm = []
    if name == "llava-tiny":
        texts = [r["text"] for r in read_manifest(shapes_data / "train.jsonl")]
        lm = [f"model.decoder.path={save_tiny_lm(tmp_path / 'lm', 'gpt2', texts)}"]

    def losses(compiled: bool) -> list[float]:
        config = load_config(CONFIGS / f"{name}.yaml",
                             [f"data.train={shapes_data / 'train.jsonl'}", f"data.val={shapes_data / 'val.jsonl'}",
                              "train.batch_size=8", "train.max_steps=4", "train.log_every=1", "train.val_every=0",
                              "train.init_from=null", "data.num_workers=0", "data.augment=false",
                              short, f"train.compile={str(compiled).lower()}", *lm])
        out = tmp_path / f"compiled_{compiled}"
        dynamo.reset()
        dynamo.utils.counters.clear()
        train(config, out, log=lambda _: None)
        assert bool(dynamo.utils.counters["stats"]["unique_graphs"]) == compiled  # the step ran through dynamo
        return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()
                if "loss" in json.loads(line)]

    eager, compiled = losses(False), losses(True)
    assert len(eager) == 4
    # inductor fuses and reorders float arithmetic: equal to float32 rounding over four steps
    torch.testing.assert_close(torch.tensor(compiled), torch.tensor(eager), rtol=1e-4, atol=1e-5)
