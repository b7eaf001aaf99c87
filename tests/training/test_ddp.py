"""`torchrun --nproc_per_node 2` (DDP, gloo on CPU) matches a single process at the same global batch."""

import json
import os
import subprocess
import sys

import pytest

from conftest import tiny_config, write_config


def train_single_and_ddp(path, tmp_path):
    """Train the config at `path` in one process (run `single`) and in two DDP processes (run `ddp`)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    train = ["-m", "polymodal.cli", "train", str(path)]
    subprocess.run([sys.executable, *train, "--out", str(tmp_path / "single")], check=True, env=env,
                   capture_output=True)
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          *train, "--out", str(tmp_path / "ddp")], env=env, capture_output=True, text=True)
    assert ddp.returncode == 0, ddp.stderr[-3000:]


def losses(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.mark.parametrize("kind", ["vqa", "clip"])
def test_two_process_ddp_matches_single_process(shapes_data, tmp_path, kind):
    # clip checks the all-gather: negatives come from the whole global batch in both runs
    path = write_config(tmp_path, tiny_config(shapes_data, kind, max_steps=5, batch_size=16))
    train_single_and_ddp(path, tmp_path)
    single, parallel = losses(tmp_path / "single"), losses(tmp_path / "ddp")
    assert len(single) == len(parallel) == 5
    assert parallel == pytest.approx(single, rel=1e-4, abs=1e-5)
    assert single[-1] < single[0]


@pytest.mark.parametrize("weighting", ["uncertainty", "pcgrad"])
def test_two_process_ddp_matches_single_process_with_learnt_weighting(shapes_data, tmp_path, weighting):
    # the loss weights sit outside the DDP module and PCGrad's per-task gradients bypass DDP's reduction:
    # the trainer averages both over processes itself
    config = tiny_config(shapes_data, "vqa", max_steps=4, batch_size=16, loss_weighting=weighting)
    config["tasks"] = {"vqa": {"type": "vqa", "hidden": 16}, "shape": {"type": "classification", "hidden": 16}}
    path = write_config(tmp_path, config)
    train_single_and_ddp(path, tmp_path)
    single, parallel = ([r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
                        for run in (tmp_path / "single", tmp_path / "ddp"))
    for key in ("loss", "loss/vqa", "loss/shape", "weight/vqa", "weight/shape"):
        assert [r[key] for r in parallel] == pytest.approx([r[key] for r in single], rel=1e-4, abs=1e-5), key
