"""`train.compile`: the shipped configs trace into one graph (no graph break), and compiled training
gives the eager losses."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
import torch._dynamo as dynamo

from polymodal.config import load_config
from polymodal.data.shapes_av import synthesize_av
from polymodal.training.trainer import Trainer, train

CONFIGS = Path(__file__).parents[2] / "src" / "polymodal" / "configs"
AV = ("shapes-av", "shapes-video", "audio-", "caption-video", "caption-audio")
# Configs whose step still breaks the graph, and where (issue 21 continues with them): media spans spliced
# into a decoder's input make its length depend on the data (models/splice.py; vanishing placeholders keep
# the input's length under compile), and HF models are traced through code dynamo does not follow.
NOT_YET = {"llava-tiny.yaml": "splice of media spans, HF decoder", "distill-text.yaml": "HF teacher"}
ONE_GRAPH = sorted(p.name for p in CONFIGS.glob("*.yaml") if p.name not in NOT_YET)


@pytest.fixture(scope="module")
def av_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("av")
    synthesize_av(out, n_train=16, n_val=8, n_test=8, log=lambda _: None)
    return out / "av"


def _trainer(name: str, shapes_data: Path, av_data: Path, out: Path, *sets: str) -> Trainer:
    data = av_data if name.startswith(AV) else shapes_data
    config = load_config(CONFIGS / name, [f"data.train={data / 'train.jsonl'}", f"data.val={data / 'val.jsonl'}",
                                          f"data.test={data / 'test.jsonl'}", "train.batch_size=4",
                                          "train.max_steps=2", "train.val_every=0", "train.init_from=null",
                                          "data.num_workers=0", *sets])
    return Trainer(config, out, log=lambda _: None)


def test_every_shipped_config_is_either_one_graph_or_named_with_its_reason():
    assert set(ONE_GRAPH) | set(NOT_YET) == {p.name for p in CONFIGS.glob("*.yaml")}
    assert {"shapes-vqa.yaml", "shapes-clip.yaml", "shapes-av.yaml", "pretrain.yaml", "caption-image.yaml",
            "vqa-generative.yaml", "multitask.yaml"} <= set(ONE_GRAPH)


@pytest.mark.parametrize("name", ONE_GRAPH)
def test_a_training_step_traces_into_one_graph(name, shapes_data, av_data, tmp_path):
    trainer = _trainer(name, shapes_data, av_data, tmp_path / "run")
    batches = trainer._next_batches(list(trainer.config.tasks))
    dynamo.reset()
    with dynamo.config.patch(allow_rnn=True):
        explained = dynamo.explain(trainer.model)(batches)
    where = [f"{b.reason.splitlines()[0]} at {b.user_stack[-1].filename}:{b.user_stack[-1].lineno}"
             for b in explained.break_reasons if b.user_stack]
    assert explained.graph_count == 1 and not explained.break_reasons, where


@pytest.mark.parametrize("backend, name, short", [
    ("aot_eager", "shapes-vqa", "model.encoders.text.max_length=16"),
    ("aot_eager", "caption-image", "tasks.caption.max_length=16"),  # the decoder's input spliced in place
    pytest.param("inductor", "shapes-vqa", "model.encoders.text.max_length=16", marks=pytest.mark.slow)])
def test_compiled_training_gives_the_eager_losses(backend, name, short, shapes_data, tmp_path, monkeypatch):
    """aot_eager traces forward and backward as inductor does, without generating code (3 minutes of C++
    compilation on 2 cores); the slow run checks inductor's code too."""
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend=backend))

    def losses(compiled: bool) -> list[float]:
        config = load_config(CONFIGS / f"{name}.yaml",
                             [f"data.train={shapes_data / 'train.jsonl'}", f"data.val={shapes_data / 'val.jsonl'}",
                              "train.batch_size=8", "train.max_steps=4", "train.log_every=1", "train.val_every=0",
                              "train.init_from=null", "data.num_workers=0", "data.augment=false",
                              short, f"train.compile={str(compiled).lower()}"])
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
