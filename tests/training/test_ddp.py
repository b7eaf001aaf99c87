"""`torchrun --nproc_per_node 2` (gloo on CPU) matches a single process at the same global batch, under DDP
and under FSDP2 (`train.strategy: fsdp`): the same losses and the same exported weights."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_config, write_config
from polymodal.config import load_config
from polymodal.errors import ConfigError

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def train(path, out, processes=1, *extra):
    """`polymodal train` of the config at `path` into `out`, in one process or under torchrun."""
    launch = (["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
              if processes > 1 else [])
    done = subprocess.run([sys.executable, *launch, "-m", "polymodal.cli", "train", str(path), "--out", str(out),
                           *extra], env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def train_single_and_ddp(path, tmp_path, strategy="ddp"):
    """Train the config at `path` in one process (run `single`) and in two processes (run `ddp` or `fsdp`)."""
    train(path, tmp_path / "single")
    return train(path, tmp_path / strategy, 2, "--set", f"train.strategy={strategy}")


def rows(run):
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def untimed(run):
    """The log's rows without the figures that depend on the clock (samples/s, data wait)."""
    clocked = ("samples_per_s", "tokens_per_s", "data_wait", "mfu")
    return [{k: v for k, v in r.items() if k not in clocked} for r in rows(run)]


def losses(run):
    return [r["loss"] for r in rows(run)]


def assert_same_weights(run, other, atol=2e-5):
    mine, theirs = (load_file(str(r / "model" / "model.safetensors")) for r in (run, other))
    assert mine.keys() == theirs.keys()
    for name in mine:
        torch.testing.assert_close(mine[name], theirs[name], rtol=1e-4, atol=atol, msg=name)


@pytest.mark.parametrize("kind", ["vqa", "clip"])
def test_two_process_ddp_matches_single_process(shapes_data, tmp_path, kind):
    # clip checks the all-gather: negatives come from the whole global batch in both runs
    path = write_config(tmp_path, tiny_config(shapes_data, kind, max_steps=5, batch_size=16))
    train_single_and_ddp(path, tmp_path)
    single, parallel = losses(tmp_path / "single"), losses(tmp_path / "ddp")
    assert len(single) == len(parallel) == 5
    assert parallel == pytest.approx(single, rel=1e-4, abs=1e-5)
    assert single[-1] < single[0]
    assert_same_weights(tmp_path / "single", tmp_path / "ddp")


FUSIONS = {"gated": {"type": "gated_cross_attention", "depth": 1, "num_heads": 2},
           "cross": {"type": "cross", "depth": 2, "num_heads": 2, "layers": [2]}}


@pytest.mark.parametrize("kind", ["vqa", "clip", "gated", "cross", "lora"])
def test_two_process_fsdp_matches_single_process(shapes_data, tmp_path, kind):
    # each process holds half of every weight; 2 accumulation steps check that gradients are reduced once;
    # FSDP cannot shard scalars (clip's temperature, the gates of gated cross-attention): they stay whole and
    # the trainer averages their gradients (the gates' differ between processes); cross-attention fusion
    # calls its blocks' other entry points (a unimodal first layer), here under activation checkpointing;
    # LoRA's export merges the adapters into the gathered weights
    config = tiny_config(shapes_data, "clip" if kind == "clip" else "vqa", max_steps=4, batch_size=16, accumulate=2,
                         activation_checkpointing=kind == "cross")
    if kind == "lora":
        config["train"]["lora"] = {"targets": [".*attn.*"], "r": 4}
    if kind in FUSIONS:
        del config["model"]["type"], config["model"]["depth"], config["model"]["num_heads"]
        config["model"]["fusion"] = FUSIONS[kind]
    log = train_single_and_ddp(write_config(tmp_path, config), tmp_path, "fsdp")
    blocks = {"vqa": "2 transformer blocks", "clip": "1 transformer block", "gated": "2 transformer blocks",
              "cross": "5 transformer blocks", "lora": "2 transformer blocks"}[kind]  # the text encoder's, and the fusion's
    assert f"FSDP over 2 processes: {blocks} sharded one by one" in log
    single, sharded = losses(tmp_path / "single"), losses(tmp_path / "fsdp")
    assert len(sharded) == 4 and sharded == pytest.approx(single, rel=1e-4, abs=1e-5)
    assert single[-1] < single[0]
    assert_same_weights(tmp_path / "single", tmp_path / "fsdp")  # the export is whole: load() needs no group
    assert sorted(p.name for p in (tmp_path / "fsdp" / "checkpoints" / "step_000003" / "sharded").iterdir()) == [
        ".metadata", "__0_0.distcp", "__1_0.distcp"]


def test_a_killed_fsdp_run_resumes_with_the_same_losses_at_any_number_of_processes(shapes_data, tmp_path):
    # learnt loss weights sit outside the sharded model: their state must travel in the checkpoint too
    config = tiny_config(shapes_data, "vqa", max_steps=6, batch_size=16, ckpt_every=3,
                         loss_weighting="uncertainty", strategy="fsdp")
    config["tasks"] = {"vqa": {"type": "vqa", "hidden": 16}, "shape": {"type": "classification", "hidden": 16}}
    path = write_config(tmp_path, config)
    full = tmp_path / "full"
    train(path, full, 2)
    for processes in (2, 1):
        killed = tmp_path / f"killed-{processes}"
        shutil.copytree(full, killed)
        (killed / "model" / "model.safetensors").unlink()  # the export at the end
        shutil.rmtree(killed / "checkpoints" / "step_000006")  # killed after step 5, during step 6's save:
        (killed / "checkpoints" / ".tmp-step_000006" / "sharded").mkdir(parents=True)  # half-written
        log = train(path, killed, processes, "--resume")
        assert "resumed from" in log and "step_000003 at step 3" in log
        if processes == 2:  # the same shards, the same order of sums: bit for bit
            assert untimed(killed) == untimed(full)
        else:  # resharded onto one process: the same up to the order of the gradient sums
            assert losses(killed) == pytest.approx(losses(full), rel=1e-5, abs=1e-6)
        assert_same_weights(full, killed)


@pytest.mark.parametrize("weighting", ["uncertainty", "pcgrad"])
def test_two_process_ddp_matches_single_process_with_learnt_weighting(shapes_data, tmp_path, weighting):
    # the loss weights sit outside the DDP module and PCGrad's per-task gradients bypass DDP's reduction:
    # the trainer averages both over processes itself
    config = tiny_config(shapes_data, "vqa", max_steps=4, batch_size=16, loss_weighting=weighting)
    config["tasks"] = {"vqa": {"type": "vqa", "hidden": 16}, "shape": {"type": "classification", "hidden": 16}}
    path = write_config(tmp_path, config)
    train_single_and_ddp(path, tmp_path)
    single, parallel = rows(tmp_path / "single"), rows(tmp_path / "ddp")
    for key in ("loss", "loss/vqa", "loss/shape", "weight/vqa", "weight/shape"):
        assert [r[key] for r in parallel] == pytest.approx([r[key] for r in single], rel=1e-4, abs=1e-5), key


@pytest.mark.parametrize("weighting", ["pcgrad", "gradnorm"])
def test_fsdp_refuses_the_weightings_that_need_whole_gradients(shapes_data, tmp_path, weighting):
    path = write_config(tmp_path, tiny_config(shapes_data, "vqa", strategy="fsdp", loss_weighting=weighting))
    with pytest.raises(ConfigError, match=f"train.loss_weighting: '{weighting}'.*train.strategy: ddp"):
        load_config(path)
    with pytest.raises(ConfigError, match="train.strategy: expected one of ddp, fsdp, got 'zero3'"):
        load_config(path, ["train.strategy=zero3"])


def test_a_ddp_checkpoint_is_not_resumed_as_fsdp(shapes_data, tmp_path):
    path = write_config(tmp_path, tiny_config(shapes_data, "vqa", max_steps=3, ckpt_every=3))
    train(path, tmp_path / "run")
    launch = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run([sys.executable, *launch, "-m", "polymodal.cli", "train", str(path), "--out",
                           str(tmp_path / "run"), "--resume", "--set", "train.strategy=fsdp", "train.max_steps=6"],
                          env=ENV, capture_output=True, text=True)
    assert done.returncode != 0
    assert "step_000003: written by a run with train.strategy: ddp (whole weights); resume it with ddp" in done.stderr


def test_two_processes_stream_shards_split_between_them_and_resume_exactly(shapes_data, tmp_path):
    from polymodal.data.manifest import read_manifest
    from polymodal.data.shards import write_shards

    write_shards(read_manifest(shapes_data / "train.jsonl"), tmp_path / "shards", shard_size=20, log=lambda _: None)
    config = tiny_config(shapes_data, "vqa", max_steps=6, batch_size=16, ckpt_every=3)
    config["data"].update(train=str(tmp_path / "shards" / "shard-{000000..000004}.tar"), shuffle_buffer=8,
                          num_workers=2)
    path = write_config(tmp_path, config)
    full = tmp_path / "full"
    log = train(path, full, 2)
    assert "streaming 5 shards" in log and "in 4 streams (2 processes × 2" in log
    killed = tmp_path / "killed"
    shutil.copytree(full, killed)
    (killed / "model" / "model.safetensors").unlink()
    shutil.rmtree(killed / "checkpoints" / "step_000006")
    log = train(path, killed, 2, "--resume")
    assert "step_000003 at step 3" in log and "differs from an uninterrupted" not in log
    assert untimed(killed) == untimed(full)  # each worker of each process went on where it stopped
    shutil.rmtree(killed / "checkpoints" / "step_000006")
    log = train(path, killed, 1, "--resume")  # another layout: it says so, and goes on
    assert "streamed by 2 processes × 2 workers before and are by 1 × 2 now" in log
