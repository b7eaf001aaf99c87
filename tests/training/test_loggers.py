"""`train.loggers`: TensorBoard and Weights & Biases receive what `metrics.jsonl` receives."""

import json
import sys
import types

import pytest

from conftest import tiny_config, write_config
from polymodal.config import load_config
from polymodal.errors import ConfigError
from polymodal.training.loggers import flatten
from polymodal.training.trainer import Trainer


def _records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _train(shapes_data, tmp_path, loggers, **train):
    config = tiny_config(shapes_data, "vqa", max_steps=4, log_every=2, batch_size=8, loggers=loggers, **train)
    config["data"]["val"] = config["data"]["train"]
    Trainer(load_config(write_config(tmp_path, config)), tmp_path / "run", log=lambda _: None).fit()
    return tmp_path / "run"


def test_flatten_joins_nested_names_and_keeps_numbers_only():
    record = {"step": 4, "lr": 0.1, "loss/vqa": 2.0, "val": {"vqa": {"accuracy": 0.5, "n": 8}}, "note": "x",
              "flag": True}
    assert flatten(record) == {"lr": 0.1, "loss/vqa": 2.0, "val/vqa/accuracy": 0.5, "val/vqa/n": 8.0}


def test_tensorboard_gets_every_figure_of_metrics_jsonl(shapes_data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = _train(shapes_data, tmp_path, ["tensorboard"])
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    expected = {}
    for record in _records(run):
        for name, value in flatten(record).items():
            expected.setdefault(name, []).append((record["step"], value))
    assert {"loss", "lr", "samples_per_s", "tokens_per_s", "data_wait", "val/vqa/accuracy"} <= set(expected)
    assert set(events.Tags()["scalars"]) == set(expected)
    for name, points in expected.items():
        logged = [(e.step, e.value) for e in events.Scalars(name)]
        assert [s for s, _ in logged] == [s for s, _ in points]
        assert [v for _, v in logged] == pytest.approx([v for _, v in points], rel=1e-6)


class FakeWandb(types.ModuleType):
    """The part of `wandb` the logger uses, recording its calls."""

    def __init__(self):
        super().__init__("wandb")
        self.inits, self.logged, self.finished = [], [], 0

    def init(self, **kwargs):
        self.inits.append(kwargs)
        fake = self

        class Run:
            def log(self, figures, step):
                fake.logged.append((step, figures))

            def finish(self):
                fake.finished += 1

        return Run()


@pytest.fixture
def fake_wandb(monkeypatch, tmp_path):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: no key
    return fake


def test_wandb_runs_offline_without_a_key_logs_each_record_and_a_resumed_run_continues_it(
        shapes_data, tmp_path, fake_wandb):
    run = _train(shapes_data, tmp_path, ["wandb"], wandb={"project": "mine", "tags": ["t"]})
    (init,) = fake_wandb.inits
    assert init["mode"] == "offline" and init["project"] == "mine" and init["tags"] == ["t"]
    assert init["name"] == "run" and init["dir"] == str(run) and init["resume"] == "allow"
    assert init["config"]["train"]["max_steps"] == 4
    assert fake_wandb.logged == [(r["step"], flatten(r)) for r in _records(run)]
    assert fake_wandb.finished == 1

    config = load_config(run / "config.yaml")
    config.train.max_steps = 6
    Trainer(config, run, resume=True, log=lambda _: None).fit()
    assert fake_wandb.inits[1]["id"] == init["id"]  # the same W&B run
    assert fake_wandb.logged[-1][0] == 6


def test_wandb_goes_online_with_a_key(shapes_data, tmp_path, fake_wandb, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    _train(shapes_data, tmp_path, ["wandb"])
    assert fake_wandb.inits[0]["mode"] == "online" and fake_wandb.inits[0]["project"] == "polymodal"


def test_real_wandb_offline_writes_its_run_folder(shapes_data, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = _train(shapes_data, tmp_path, ["wandb"])
    (folder,) = (run / "wandb").glob("offline-run-*")
    assert list(folder.glob("run-*.wandb"))[0].stat().st_size > 0
    assert folder.name.endswith((run / "wandb-id").read_text())


def test_bad_loggers_are_named(shapes_data, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="train.loggers: unknown logger 'mlflow'; expected some of tensorboard, wandb"):
        load_config(write_config(tmp_path, tiny_config(shapes_data, "vqa", loggers=["mlflow"])))
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # not installed
    with pytest.raises(ConfigError, match=r"train.loggers: 'tensorboard' needs the tensorboard package.*"
                                          r"pip install 'polymodal\[loggers\]'"):
        _train(shapes_data, tmp_path, ["tensorboard"])
