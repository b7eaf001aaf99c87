"""Multi-task training: each task's own manifests, task samplers, one batch for tasks that read the same
records, and the per-task curves of the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import polymodal.training.trainer as trainer_module
from conftest import tiny_config, write_config
from polymodal.api import load
from polymodal.config import apply_overrides, load_config
from polymodal.data.loader import StepSampler
from polymodal.data.manifest import read_manifest
from polymodal.errors import ConfigError
from polymodal.report import task_curves
from polymodal.training.multitask import TaskSampler
from polymodal.training.speed import TIMED
from polymodal.training.trainer import Trainer


def metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def two_tasks(data, **train):
    """VQA and classification on the same records; the classifier reads the image alone."""
    config = tiny_config(data, "vqa", **train)
    config["tasks"] = {"vqa": {"type": "vqa", "hidden": 16}, "shape": {"type": "classification", "hidden": 16}}
    return config


def same_inputs(data, **train):
    """Contrastive learning and classification, both reading the image and the caption of the same records."""
    config = tiny_config(data, "clip", **train)
    config["tasks"] = {"retrieval": {"type": "contrastive"},
                       "shape": {"type": "classification", "hidden": 16, "inputs": {"image": "image", "text": "text"}}}
    return config


def first_records(src, dst, n):
    """A manifest of `src`'s first n records (media paths made absolute by reading)."""
    dst.write_text("".join(json.dumps(r) + "\n" for r in read_manifest(src)[:n]))
    return dst


# --- per-task data ---------------------------------------------------------------------------------------

def test_task_data_paths_resolve_against_the_config_file_and_the_cwd_for_set(shapes_data, tmp_path):
    config = two_tasks(shapes_data)
    config["tasks"]["shape"]["data"] = {"train": "own/train.jsonl", "val": str(shapes_data / "val.jsonl")}
    loaded = load_config(write_config(tmp_path, config))
    assert loaded.tasks["shape"]["data"] == {"train": str(tmp_path / "own" / "train.jsonl"),
                                             "val": str(shapes_data / "val.jsonl")}
    raw = {"tasks": {"shape": {"type": "classification"}}}
    apply_overrides(raw, ["tasks.shape.data.test=rel/test.jsonl"])
    assert raw["tasks"]["shape"]["data"]["test"] == str(__import__("pathlib").Path("rel/test.jsonl").absolute())
    config["tasks"]["shape"]["data"] = {"training": "x.jsonl"}
    with pytest.raises(ConfigError, match="tasks.shape.data: unknown key 'training'; allowed keys: train, val, test"):
        load_config(write_config(tmp_path, config, "bad.yaml"))


def test_each_task_trains_and_validates_on_its_own_manifests(shapes_data, tmp_path):
    own_train = first_records(shapes_data / "train.jsonl", tmp_path / "shape_train.jsonl", 40)
    own_val = first_records(shapes_data / "val.jsonl", tmp_path / "shape_val.jsonl", 12)
    config = two_tasks(shapes_data, max_steps=3)
    config["tasks"]["shape"]["data"] = {"train": str(own_train), "val": str(own_val)}
    trainer = Trainer(load_config(write_config(tmp_path, config)), tmp_path / "run", log=lambda _: None)
    assert len(trainer.train_records["vqa"]) == 96 and len(trainer.train_records["shape"]) == 40
    assert (trainer.loaders[("shape",)]._index_sampler.n, trainer.loaders[("vqa",)]._index_sampler.n) == (40, 96)
    trainer.fit()
    val = [r["val"] for r in metrics(tmp_path / "run") if "val" in r][-1]
    assert (val["vqa"]["n"], val["shape"]["n"]) == (32.0, 12.0)

    # `polymodal eval` without --data: each task on its own manifest of the split (from the run's config)
    done = subprocess.run([sys.executable, "-m", "polymodal.cli", "eval", str(tmp_path / "run"), "--split", "val",
                           "--json"], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    model = load(tmp_path / "run")
    records = {"vqa": read_manifest(shapes_data / "val.jsonl"), "shape": read_manifest(own_val)}
    assert json.loads(done.stdout) == model.evaluate(records)
    assert model.evaluate(records)["shape"]["n"] == 12.0


# --- task samplers ---------------------------------------------------------------------------------------

def test_sampling_probabilities_by_hand():
    # sqrt(90) : sqrt(10) = 3 : 1
    assert TaskSampler(["a", "b"], [90, 10], "temperature", seed=0, temperature=2.0).probs.tolist() == \
        pytest.approx([0.75, 0.25], abs=1e-12)
    assert TaskSampler(["a", "b"], [90, 10], "proportional", seed=0).probs.tolist() == pytest.approx([0.9, 0.1])
    assert TaskSampler(["a", "b"], [90, 10], "temperature", seed=0, temperature=1.0).probs.tolist() == \
        pytest.approx([0.9, 0.1])
    assert TaskSampler(["a", "b"], [90, 10], "temperature", seed=0, temperature=1e12).probs.tolist() == \
        pytest.approx([0.5, 0.5], abs=1e-10)


@pytest.mark.parametrize("mode, temperature, expected", [("temperature", 2.0, 0.25), ("proportional", 2.0, 0.1),
                                                          ("temperature", 1e12, 0.5)])
def test_the_draws_follow_the_probabilities(mode, temperature, expected):
    """Not only the probabilities: the tasks drawn step by step. Over 4 000 steps the small task's share is
    within 0.025 of its probability (3.2 standard deviations at 0.25): a sampler that drew uniformly, or by
    the sizes whatever the mode, fails one of the three."""
    sampler = TaskSampler(["a", "b"], [90, 10], mode, seed=11, temperature=temperature)
    share = sampler.draws_before(4000)["b"] / 4000
    assert share == pytest.approx(expected, abs=0.025)


def test_draws_are_a_function_of_seed_and_step_and_streams_resume_at_their_draw_count():
    rr = TaskSampler(["a", "b", "c"], [5, 5, 5], "round_robin", seed=0)
    assert [rr.tasks_at(k) for k in range(4)] == [["a"], ["b"], ["c"], ["a"]]
    assert rr.draws_before(5) == {"a": 2, "b": 2, "c": 1}
    one = TaskSampler(["a", "b"], [90, 10], "proportional", seed=3)
    other = TaskSampler(["a", "b"], [90, 10], "proportional", seed=3)
    draws = [one.tasks_at(k)[0] for k in range(200)]
    assert draws == [other.tasks_at(k)[0] for k in reversed(range(200))][::-1]  # any order of asking
    assert one.draws_before(200) == {"a": draws.count("a"), "b": draws.count("b")}
    assert TaskSampler(["a", "b"], [1, 1], "all", seed=0).tasks_at(7) == ["a", "b"]


@pytest.mark.parametrize("setting", [{"task_sampling": "round_robin"}, {"task_sampling": "temperature"},
                                     {"loss_weighting": "uncertainty"}, {"loss_weighting": "pcgrad"},
                                     {"loss_weighting": "gradnorm"}], ids=lambda s: next(iter(s.values())))
def test_resume_is_exact_with_task_sampling_and_learnt_weights(shapes_data, tmp_path, setting):
    # a sampler's draws, the learnt loss weights and their optimiser state all resume where they stopped
    config = load_config(write_config(tmp_path, two_tasks(shapes_data, max_steps=6, ckpt_every=2, **setting)))
    Trainer(config, tmp_path / "full", log=lambda _: None).fit()
    Trainer(config, tmp_path / "cut", log=lambda _: None, stop_at=3).fit()
    Trainer(config, tmp_path / "cut", resume=True, log=lambda _: None).fit()
    full = [r for r in metrics(tmp_path / "full") if "loss" in r]
    cut = [r for r in metrics(tmp_path / "cut") if "loss" in r]
    assert [{k: v for k, v in r.items() if k not in TIMED} for r in cut] == \
        [{k: v for k, v in r.items() if k not in TIMED} for r in full]
    sampling = setting.get("task_sampling", "all")
    sampler = TaskSampler(list(config.tasks), [96, 96], sampling, seed=0)  # the file's order: shape, vqa
    assert [[k.split("/")[1] for k in r if k.startswith("loss/")] for r in full] == \
        [sampler.tasks_at(k) for k in range(6)]


def test_a_task_stream_advances_only_when_it_is_drawn(shapes_data, tmp_path):
    config = load_config(write_config(tmp_path, two_tasks(shapes_data, max_steps=9, ckpt_every=5,
                                                          task_sampling="round_robin")))
    Trainer(config, tmp_path / "run", log=lambda _: None, stop_at=5).fit()
    resumed = Trainer(config, tmp_path / "run", resume=True, log=lambda _: None)
    assert list(config.tasks) == ["shape", "vqa"]  # by step 5, shape was drawn 3 times and vqa twice
    expected = list(StepSampler(96, 16, seed=0, max_steps=9))
    assert next(resumed.loaders[("shape",)])["index"].tolist() == [i for _, i in expected[3]]
    assert next(resumed.loaders[("vqa",)])["index"].tolist() == [i for _, i in expected[2]]


def test_task_sampling_is_checked():
    from polymodal.config import from_dict

    raw = {"model": {"type": "joint_transformer"}, "tasks": {"vqa": {"type": "vqa"}},
           "train": {"task_sampling": "random"}}
    with pytest.raises(ConfigError, match="train.task_sampling: expected one of all, round_robin, proportional, "
                                          "temperature, got 'random'"):
        from_dict(raw, base_dir=__import__("pathlib").Path("."))


# --- one backbone pass for tasks on the same records -------------------------------------------------------

def encoder_calls(trainer):
    calls = []
    trainer.model.backbone.encoders["image"].register_forward_hook(lambda *_: calls.append(1))
    values = trainer.train_step()
    return len(calls), values


def test_tasks_on_the_same_records_share_one_batch_and_one_encoder_pass(shapes_data, tmp_path, monkeypatch):
    config = load_config(write_config(tmp_path, same_inputs(shapes_data, max_steps=2)))
    shared = Trainer(config, tmp_path / "shared", log=lambda _: None)
    assert list(shared.loaders) == [("retrieval", "shape")]
    calls, values = encoder_calls(shared)
    assert calls == 1
    monkeypatch.setattr(trainer_module, "batch_groups", lambda data, *_: [[n] for n in data])
    apart = Trainer(config, tmp_path / "apart", log=lambda _: None)
    assert list(apart.loaders) == [("retrieval",), ("shape",)]
    calls_apart, values_apart = encoder_calls(apart)
    assert calls_apart == 2
    # samples/s counts the examples read: one batch shared by two tasks is one batch, not two
    assert shared.samples_per_step() == config.train.batch_size
    assert apart.samples_per_step() == 2 * config.train.batch_size
    # the same examples, so the same losses (one pass or two)
    for key in ("loss/retrieval", "loss/shape", "loss"):
        assert values[key] == pytest.approx(values_apart[key], rel=1e-6, abs=1e-7)


def test_a_batch_is_shared_by_its_group_name_not_by_which_dict_object_it_is(shapes_data, tmp_path):
    """Copies of the same inputs under one `group` make one pass; without a group, a task has its own."""
    config = load_config(write_config(tmp_path, same_inputs(shapes_data, max_steps=2)))
    trainer = Trainer(config, tmp_path / "run", log=lambda _: None)
    batch = trainer._next_batches(["retrieval", "shape"])
    assert batch["retrieval"]["group"] == batch["shape"]["group"] == "retrieval+shape"
    calls = []
    trainer.model.backbone.encoders["image"].register_forward_hook(lambda *_: calls.append(1))
    copied = {n: {**b, "inputs": {m: dict(v) for m, v in b["inputs"].items()}} for n, b in batch.items()}
    shared = trainer.model(copied)
    assert len(calls) == 1
    alone = trainer.model({n: {k: v for k, v in b.items() if k != "group"} for n, b in batch.items()})
    assert len(calls) == 3
    for name in batch:
        torch.testing.assert_close(shared[name]["loss"], alone[name]["loss"])


def test_tasks_on_other_fields_or_other_samplers_do_not_share(shapes_data, tmp_path):
    config = same_inputs(shapes_data)
    config["tasks"]["shape"].pop("inputs")  # image only: another inputs mapping
    trainer = Trainer(load_config(write_config(tmp_path, config)), tmp_path / "a", log=lambda _: None)
    assert list(trainer.loaders) == [("retrieval",), ("shape",)]
    rr = Trainer(load_config(write_config(tmp_path, same_inputs(shapes_data, task_sampling="round_robin"), "b.yaml")),
                 tmp_path / "b", log=lambda _: None)
    assert list(rr.loaders) == [("retrieval",), ("shape",)]
    vqa = Trainer(load_config(write_config(tmp_path, two_tasks(shapes_data), "c.yaml")), tmp_path / "c",
                  log=lambda _: None)
    assert list(vqa.loaders) == [("shape",), ("vqa",)]  # VQA builds its own examples (more_questions)


# --- report ----------------------------------------------------------------------------------------------

def test_task_curves_collect_each_task_loss_and_weight():
    rows = [{"step": 1, "loss": 3.0, "loss/a": 1.0, "weight/a": 0.5},
            {"step": 2, "loss": 4.0, "loss/b": 2.0, "weight/b": 2.0},
            {"step": 2, "val": {"a": {"accuracy": 0.5}}}]
    assert task_curves(rows) == {"loss": {"a": ([1], [1.0]), "b": ([2], [2.0])},
                                 "weight": {"a": ([1], [0.5]), "b": ([2], [2.0])}}


def test_report_draws_task_curves_for_a_run_of_several_tasks(shapes_data, tmp_path):
    from polymodal.report import plot_task_curves

    config = load_config(write_config(tmp_path, two_tasks(shapes_data, max_steps=2)))
    Trainer(config, tmp_path / "run", log=lambda _: None).fit()
    assert plot_task_curves(tmp_path / "run", tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0
    single = load_config(write_config(tmp_path, tiny_config(shapes_data, "vqa", max_steps=1), "one.yaml"))
    Trainer(single, tmp_path / "one", log=lambda _: None).fit()
    assert not plot_task_curves(tmp_path / "one", tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
