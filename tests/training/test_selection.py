"""Best-checkpoint selection and early stopping, with validation scripted step by step."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_config, write_config
from polymodal.config import load_config
from polymodal.errors import ConfigError
from polymodal.training.checkpoint import WEIGHTS
from polymodal.training.selection import BestTracker
from polymodal.training.trainer import Trainer

ACCURACY = {1: 0.2, 2: 0.5, 3: 0.4, 4: 0.45, 5: 0.3, 6: 0.1}  # validation at step → vqa/accuracy


def scripted(config, out, snapshots, **kw):
    """A trainer whose validation gives ACCURACY at each step and keeps the weights it validated."""
    trainer = Trainer(config, out, log=lambda _: None, **kw)

    def validate():
        snapshots[trainer.step] = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        return {"vqa": {"accuracy": ACCURACY[trainer.step], "n": 32.0}}

    trainer.validate = validate
    return trainer


def exported(run):
    return load_file(str(run / "model" / WEIGHTS))


def same(weights, snapshot):
    return sorted(weights) == sorted(snapshot) and all(torch.equal(weights[k], snapshot[k]) for k in weights)


def config_with(data, tmp_path, name="config.yaml", **train):
    return load_config(write_config(tmp_path, tiny_config(data, "vqa", max_steps=6, val_every=1, **train), name))


@pytest.mark.parametrize("mode, best", [("max", 2), ("min", 6)])
def test_the_exported_weights_are_the_best_validations(shapes_data, tmp_path, mode, best):
    snapshots = {}
    config = config_with(shapes_data, tmp_path, select={"metric": "vqa/accuracy", "mode": mode})
    scripted(config, tmp_path / "run", snapshots).fit()
    assert sorted(snapshots) == [1, 2, 3, 4, 5, 6]
    assert same(exported(tmp_path / "run"), snapshots[best])
    assert not same(exported(tmp_path / "run"), snapshots[3])


def test_early_stop_after_patience_validations_without_improvement(shapes_data, tmp_path):
    snapshots = {}
    config = config_with(shapes_data, tmp_path, select={"metric": "vqa/accuracy"}, early_stop={"patience": 3})
    trainer = scripted(config, tmp_path / "run", snapshots)
    trainer.fit()
    # best at 2; 3, 4, 5 are no better: stop at step 5
    assert trainer.step == 5 and sorted(snapshots) == [1, 2, 3, 4, 5]
    assert same(exported(tmp_path / "run"), snapshots[2])
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 5


def test_resume_keeps_the_best_so_far(shapes_data, tmp_path):
    config = config_with(shapes_data, tmp_path, ckpt_every=2, select={"metric": "vqa/accuracy"},
                         early_stop={"patience": 3})
    full, cut = {}, {}
    scripted(config, tmp_path / "full", full).fit()
    scripted(config, tmp_path / "cut", cut, stop_at=4).fit()  # the newest checkpoint: step 4
    resumed = scripted(config, tmp_path / "cut", cut, resume=True)
    # from the checkpoint: best 0.5 at step 2, two validations (3, 4) without improvement since
    assert (resumed.step, resumed.tracker.best_step, resumed.tracker.best, resumed.tracker.bad) == (4, 2, 0.5, 2)
    resumed.fit()
    assert resumed.step == 5  # one more validation without improvement, as in the unbroken run
    assert same(exported(tmp_path / "cut"), full[2])


def test_a_metric_validation_does_not_give_names_the_ones_it_gives(shapes_data, tmp_path):
    config = config_with(shapes_data, tmp_path, select={"metric": "vqa/acc"})
    with pytest.raises(ConfigError, match="train.select.metric: validation gives no 'vqa/acc'; it gives: vqa/accuracy"):
        scripted(config, tmp_path / "run", {}).fit()


def test_select_settings_are_checked(shapes_data, tmp_path):
    with pytest.raises(ConfigError, match="train.select.metric: expected TASK/METRIC with TASK one of vqa, "
                                          "got 'shape/accuracy'"):
        config_with(shapes_data, tmp_path, select={"metric": "shape/accuracy"})
    with pytest.raises(ConfigError, match="train.select.mode: expected 'max' or 'min', got 'up'"):
        config_with(shapes_data, tmp_path, select={"metric": "vqa/accuracy", "mode": "up"})
    with pytest.raises(ConfigError, match="train.early_stop: needs train.select"):
        config_with(shapes_data, tmp_path, early_stop={"patience": 2})
    no_val = tiny_config(shapes_data, "vqa", select={"metric": "vqa/accuracy"})
    del no_val["data"]["val"]
    with pytest.raises(ConfigError, match="train.select.metric: task 'vqa' has no validation records"):
        Trainer(load_config(write_config(tmp_path, no_val, "n.yaml")), tmp_path / "run", log=lambda _: None)


def test_tracker_by_hand():
    tracker = BestTracker("a/loss", "min", patience=2)
    assert [tracker.update(s, {"a": {"loss": v}}) for s, v in enumerate([3.0, 2.0, 2.0, 2.5])] == \
        [True, True, False, False]
    assert (tracker.best, tracker.best_step, tracker.bad, tracker.should_stop) == (2.0, 1, 2, True)
