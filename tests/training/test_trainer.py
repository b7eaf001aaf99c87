"""The trainer: losses fall, accumulation equals a big batch, checkpoints are complete and loadable."""

import json

import pytest
import torch

from conftest import record_steps, tiny_config, write_config
from polymodal.config import load_config
from polymodal.data.loader import StepSampler
from polymodal.training.checkpoint import TRAINER, list_checkpoints
from polymodal.training.optim import lr_at
from polymodal.training.trainer import Trainer


def losses(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def test_accumulation_equals_one_big_batch(shapes_data, tmp_path):
    base = tiny_config(shapes_data, "vqa", max_steps=4, batch_size=16)
    one = load_config(write_config(tmp_path, base, "a.yaml"))
    two = load_config(write_config(tmp_path, {**base, "train": {**base["train"], "accumulate": 2}}, "b.yaml"))
    Trainer(one, tmp_path / "one", log=lambda _: None).fit()
    Trainer(two, tmp_path / "two", log=lambda _: None).fit()
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=1e-4)


def test_checkpoints_are_kept_and_load_weights_only(shapes_data, tmp_path):
    config = load_config(write_config(tmp_path, tiny_config(shapes_data, "vqa", max_steps=6, ckpt_every=2,
                                                            keep_checkpoints=2)))
    Trainer(config, tmp_path / "run", log=lambda _: None).fit()
    kept = list_checkpoints(tmp_path / "run" / "checkpoints")
    assert [p.name for p in kept] == ["step_000004", "step_000006"]
    state = torch.load(kept[-1] / TRAINER, weights_only=True)
    assert state["step"] == 6 and "optimizer" in state
    assert not list((tmp_path / "run" / "checkpoints").glob(".tmp-*"))


def test_step_sampler_shards_the_global_batch_and_is_stateless():
    whole = list(StepSampler(50, 8, seed=3, max_steps=9))
    ranks = [list(StepSampler(50, 8, seed=3, max_steps=9, rank=r, world_size=2)) for r in range(2)]
    for step in range(9):
        assert sorted(ranks[0][step] + ranks[1][step]) == sorted(whole[step])
    assert list(StepSampler(50, 8, seed=3, start_step=4, max_steps=9)) == whole[4:]
    epoch0 = [i for batch in whole[:6] for _, i in batch]  # 6 full batches per epoch of 50
    assert len(set(epoch0)) == 48


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    kw = dict(lr=1.0, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert lr_at(0, **kw) == pytest.approx(0.1)
    assert lr_at(9, **kw) == pytest.approx(1.0)
    assert lr_at(60, **kw) == pytest.approx(0.55)
    assert lr_at(110, **kw) == pytest.approx(0.1)


def test_freeze_keeps_named_parameters_fixed_and_rejects_unknown_prefixes(shapes_data, tmp_path):
    from polymodal.errors import ConfigError

    config = load_config(write_config(tmp_path, tiny_config(shapes_data, "vqa", max_steps=3,
                                                            freeze=["encoders.image"])))
    trainer = Trainer(config, tmp_path / "run", log=lambda _: None)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.fit()
    for name, p in trainer.model.named_parameters():
        if name.startswith("backbone.absent."):  # no example lacks a modality: placeholders never move
            continue
        changed = not torch.equal(before[name], p.detach())
        assert changed != name.startswith("backbone.encoders.image"), name
    bad = load_config(write_config(tmp_path, tiny_config(shapes_data, "vqa", freeze=["encoders.imag"]), "b.yaml"))
    with pytest.raises(ConfigError, match="train.freeze: 'encoders.imag' matches no parameter"):
        Trainer(bad, tmp_path / "run2", log=lambda _: None)


def test_accumulated_gradients_equal_one_big_batch(shapes_data, tmp_path):
    base = tiny_config(shapes_data, "vqa", max_steps=1, batch_size=16, grad_clip=0.0)
    seen = {}
    for accumulate in (1, 2, 4):
        config = load_config(write_config(tmp_path, {**base, "train": {**base["train"], "accumulate": accumulate}},
                                          f"a{accumulate}.yaml"))
        trainer = Trainer(config, tmp_path / f"run{accumulate}", log=lambda _: None)
        seen[accumulate] = record_steps(trainer)
        trainer.train_step()
    for accumulate in (2, 4):
        for big, small in zip(seen[1][0]["grads"], seen[accumulate][0]["grads"]):
            torch.testing.assert_close(small, big, rtol=1e-4, atol=1e-6)


def test_the_loss_is_the_weighted_sum_of_the_task_losses(shapes_data, tmp_path):
    base = tiny_config(shapes_data, "vqa", max_steps=1)
    base["tasks"] = {"vqa": {"type": "vqa", "hidden": 16, "weight": 0.5},
                     "shape": {"type": "classification", "hidden": 16, "weight": 2.0}}
    trainer = Trainer(load_config(write_config(tmp_path, base)), tmp_path / "run", log=lambda _: None)
    values = trainer.train_step()
    assert values["loss"] == pytest.approx(0.5 * values["loss/vqa"] + 2.0 * values["loss/shape"], rel=1e-6)
    assert values["loss/vqa"] != pytest.approx(values["loss/shape"], rel=1e-2)  # the weights must matter


def test_the_optimiser_gets_the_scheduled_learning_rate(shapes_data, tmp_path):
    config = load_config(write_config(tmp_path, tiny_config(shapes_data, "vqa", max_steps=5, warmup_steps=2)))
    trainer = Trainer(config, tmp_path / "run", log=lambda _: None)
    seen = record_steps(trainer)
    trainer.fit()
    kw = dict(lr=3e-3, warmup_steps=2, max_steps=5, min_lr_ratio=config.train.min_lr_ratio)
    assert [s["lr"] for s in seen] == [[pytest.approx(lr_at(step, **kw))] * 2 for step in range(5)]
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in logged if "lr" in r] == pytest.approx([lr_at(step, **kw) for step in range(5)])
