"""A run killed at step k and resumed logs exactly the losses of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import tiny_config, write_config
from polymodal.config import load_config
from polymodal.training.checkpoint import list_checkpoints
from polymodal.training.trainer import Trainer


def losses(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_resume_after_stop_matches_uninterrupted(shapes_data, tmp_path, dropout):
    # with dropout the global random state is drawn from every step: the checkpoint must restore it
    config = tiny_config(shapes_data, "vqa", max_steps=6, ckpt_every=2)
    config["model"]["dropout"] = dropout
    config["tasks"]["vqa"]["dropout"] = dropout
    path = write_config(tmp_path, config)
    config = load_config(path)
    Trainer(config, tmp_path / "full", log=lambda _: None).fit()
    # Stop after step 3: the newest checkpoint is step 2, so step 3 must be recomputed on resume.
    Trainer(config, tmp_path / "cut", log=lambda _: None, stop_at=3).fit()
    assert [p.name for p in list_checkpoints(tmp_path / "cut" / "checkpoints")] == ["step_000002"]
    Trainer(config, tmp_path / "cut", resume=True, log=lambda _: None).fit()
    full, resumed = losses(tmp_path / "full"), losses(tmp_path / "cut")
    assert sorted(resumed) == list(range(1, 7))
    assert resumed == full  # bit-exact: same data order, RNG and optimiser state


def test_sigkill_mid_run_then_resume_matches(shapes_data, tmp_path):
    config = tiny_config(shapes_data, "clip", max_steps=40, ckpt_every=5)
    path = write_config(tmp_path, config)
    cmd = [sys.executable, "-m", "polymodal.cli", "train", str(path)]
    subprocess.run(cmd + ["--out", str(tmp_path / "full")], check=True, capture_output=True)
    proc = subprocess.Popen(cmd + ["--out", str(tmp_path / "cut")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list_checkpoints(tmp_path / "cut" / "checkpoints") and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = list_checkpoints(tmp_path / "cut" / "checkpoints")
    assert done and int(done[-1].name.split("_")[1]) < 40, "the run should be killed before it finished"
    subprocess.run(cmd + ["--out", str(tmp_path / "cut"), "--resume"], check=True, capture_output=True)
    assert losses(tmp_path / "cut") == losses(tmp_path / "full")
