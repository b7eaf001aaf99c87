"""Every config under configs/ runs as shipped: it loads, builds on matching data and trains a few steps."""

from pathlib import Path

import pytest

from polymodal.api import load
from polymodal.config import load_config
from polymodal.data.manifest import read_manifest
from polymodal.data.shapes_av import synthesize_av
from polymodal.training.trainer import train

CONFIGS = sorted((Path(__file__).parents[2] / "src" / "polymodal" / "configs").glob("*.yaml"))


@pytest.fixture(scope="module")
def av_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("av")
    synthesize_av(out, n_train=40, n_val=8, n_test=8, log=lambda _: None)
    return out / "av"


def test_every_config_is_covered():
    assert {c.name for c in CONFIGS} >= {"shapes-clip.yaml", "shapes-vqa.yaml", "shapes-video-qa.yaml"}


@pytest.mark.parametrize("config_path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_trains_and_evaluates(config_path, shapes_data, av_data, tmp_path):
    data = av_data if "video" in config_path.name or "audio" in config_path.name else shapes_data
    config = load_config(config_path, [f"data.train={data / 'train.jsonl'}", f"data.val={data / 'val.jsonl'}",
                                       f"data.test={data / 'test.jsonl'}", "train.max_steps=2",
                                       "train.batch_size=8", "train.warmup_steps=1", "train.val_every=0"])
    run = tmp_path / "run"
    train(config, run)
    results = load(run).evaluate(read_manifest(data / "test.jsonl"))
    assert set(results) == set(config.tasks)
    for metrics in results.values():
        assert all(0.0 <= v <= 1.0 for k, v in metrics.items() if k != "n")
