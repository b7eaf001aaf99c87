"""Loss weighting against hand values: PCGrad's projection, uncertainty weighting's loss and gradient,
GradNorm's weight update; and in the trainer: logged weights, accumulation, exact resume."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import record_steps, tiny_config, write_config
from polymodal.config import load_config
from polymodal.errors import ConfigError
from polymodal.training.trainer import Trainer
from polymodal.training.weighting import GradNorm, PCGrad, UncertaintyWeighting, project_conflicting


def two_tasks(data, **train):
    config = tiny_config(data, "vqa", **train)
    config["tasks"] = {"vqa": {"type": "vqa", "hidden": 16}, "shape": {"type": "classification", "hidden": 16}}
    return config


def rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_pcgrad_projects_conflicting_gradients_onto_each_others_normal_plane():
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])  # g1 · g2 = -1
    p1, p2 = project_conflicting([g1, g2], torch.Generator().manual_seed(0))
    # g1 - (g1·g2)/|g2|² g2 = [1, 0] + ½ [-1, 1];  g2 - (g2·g1)/|g1|² g1 = [-1, 1] + [1, 0]
    assert p1.tolist() == [0.5, 0.5] and p2.tolist() == [0.0, 1.0]
    assert torch.dot(p1, g2) == 0 and torch.dot(p2, g1) == 0


def test_pcgrad_leaves_agreeing_gradients_alone():
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])
    assert [p.tolist() for p in project_conflicting([g1, g2], torch.Generator().manual_seed(0))] == \
        [[1.0, 0.0], [1.0, 1.0]]


def test_pcgrad_projects_the_shared_part_and_sums_the_heads():
    pc = PCGrad({"a": 1.0, "b": 1.0}, seed=0)
    shared = torch.tensor([True, True, False, False])  # two shared entries, one head entry per task
    grads = {"a": torch.tensor([1.0, 0.0, 3.0, 0.0]), "b": torch.tensor([-1.0, 1.0, 0.0, 5.0])}
    total = pc.combine_gradients(grads, {"a": 1.0, "b": 1.0}, shared, step=0)
    assert total.tolist() == [0.5, 1.5, 3.0, 5.0]


def test_uncertainty_loss_and_its_gradients_by_hand():
    weighting = UncertaintyWeighting(["a", "b"])
    with torch.no_grad():
        weighting.log_vars["a"].fill_(0.5)
        weighting.log_vars["b"].fill_(-1.0)
    la, lb = torch.tensor(2.0, requires_grad=True), torch.tensor(3.0, requires_grad=True)
    loss = weighting({"a": la, "b": lb})
    e = torch.e
    assert loss.item() == pytest.approx(2 * e ** -0.5 + 0.5 + 3 * e - 1.0, rel=1e-6)
    loss.backward()
    # ∂/∂s = 1 − exp(−s) L;  ∂/∂L = exp(−s)
    assert weighting.log_vars["a"].grad.item() == pytest.approx(1 - 2 * e ** -0.5, rel=1e-6)
    assert weighting.log_vars["b"].grad.item() == pytest.approx(1 - 3 * e, rel=1e-6)
    assert (la.grad.item(), lb.grad.item()) == (pytest.approx(e ** -0.5), pytest.approx(e))
    assert weighting.weights() == {"a": pytest.approx(e ** -0.5), "b": pytest.approx(e)}


def test_gradnorm_raises_the_weight_of_the_task_that_learns_slower():
    gn = GradNorm(["a", "b"], alpha=1.0)
    shared = torch.tensor([True, True, False])
    grads = {"a": torch.tensor([1.0, 0.0, 0.0]), "b": torch.tensor([0.0, 1.0, 0.0])}  # equal norms: G = [1, 1]
    gn.combine_gradients(grads, {"a": 1.0, "b": 1.0}, shared, step=0)  # the first losses: L(0)
    assert gn.initial_losses.tolist() == [1.0, 1.0]
    total = gn.combine_gradients(grads, {"a": 0.5, "b": 1.0}, shared, step=1)
    # ratios L/L(0) = [0.5, 1] → r = [2/3, 4/3]; target = Ḡ r^α = [2/3, 4/3];
    # ∂/∂w = sign(G − target) · ‖∇L‖
    assert gn.task_weights.grad.tolist() == [1.0, -1.0]
    assert total.tolist() == [1.0, 1.0, 0.0]  # Σ w_i ∇L_i with w = 1
    with torch.no_grad():
        gn.task_weights.copy_(torch.tensor([0.5, 2.5]))
    gn.renormalise()
    assert gn.task_weights.tolist() == pytest.approx([1 / 3, 5 / 3])


def test_gradnorm_in_the_trainer_takes_an_adam_step_on_the_weights_then_renormalises(shapes_data, tmp_path):
    config = load_config(write_config(tmp_path, two_tasks(shapes_data, max_steps=2, loss_weighting="gradnorm")))
    trainer = Trainer(config, tmp_path / "run", log=lambda _: None)
    seen, step = [], trainer.optimizer.step

    def recording_step(*args, **kwargs):
        seen.append(trainer.weighting.task_weights.grad.clone())
        return step(*args, **kwargs)

    trainer.optimizer.step = recording_step
    trainer.fit()
    logged = [r for r in rows(tmp_path / "run") if "loss" in r]
    assert (logged[0]["weight/shape"], logged[0]["weight/vqa"]) == (1.0, 1.0)
    g = seen[0]
    lr0 = logged[0]["lr"]
    moved = 1 - lr0 * g / (g.abs() + 1e-6)  # Adam's first step: lr · g / (|g| + eps)
    expected = (moved * 2 / moved.sum()).tolist()
    names = trainer.weighting.names
    assert [logged[1][f"weight/{n}"] for n in names] == pytest.approx(expected, rel=1e-5)
    assert sum(logged[1][f"weight/{n}"] for n in names) == pytest.approx(2.0, rel=1e-6)


def test_uncertainty_in_the_trainer_logs_the_weighted_loss_and_the_s_gradient(shapes_data, tmp_path):
    config = load_config(write_config(tmp_path, two_tasks(shapes_data, max_steps=1, loss_weighting="uncertainty")))
    trainer = Trainer(config, tmp_path / "run", log=lambda _: None)
    assert trainer.optimizer.param_groups[-1]["params"] == list(trainer.weighting.parameters())
    values = trainer.train_step()
    # s = 0: the loss is the plain sum, each weight 1, ∂/∂s_i = 1 − L_i (taken before the step)
    assert values["loss"] == pytest.approx(values["loss/vqa"] + values["loss/shape"], rel=1e-6)
    assert (values["weight/vqa"], values["weight/shape"]) == (1.0, 1.0)
    s = trainer.weighting.log_vars
    lr = trainer.optimizer.param_groups[-1]["lr"]
    for name in ("vqa", "shape"):  # Adam's first step moves s by −lr · sign(1 − L)
        g = 1 - values[f"loss/{name}"]
        assert s[name].item() == pytest.approx(-lr * g / (abs(g) + 1e-6), rel=1e-4)


@pytest.mark.parametrize("weighting", ["fixed", "pcgrad"])
def test_accumulated_gradients_equal_one_big_batch(shapes_data, tmp_path, weighting):
    # PCGrad projects the accumulated per-task gradients, so accumulation changes nothing either
    base = two_tasks(shapes_data, max_steps=1, batch_size=16, grad_clip=0.0, loss_weighting=weighting)
    seen = {}
    for accumulate in (1, 2):
        config = load_config(write_config(tmp_path, {**base, "train": {**base["train"], "accumulate": accumulate}},
                                          f"a{accumulate}.yaml"))
        trainer = Trainer(config, tmp_path / f"run{accumulate}", log=lambda _: None)
        seen[accumulate] = record_steps(trainer)
        trainer.train_step()
    for big, small in zip(seen[1][0]["grads"], seen[2][0]["grads"]):
        torch.testing.assert_close(small, big, rtol=1e-4, atol=1e-6)


def test_pcgrad_of_one_task_is_the_plain_gradient(shapes_data, tmp_path):
    seen = {}
    for weighting in ("fixed", "pcgrad"):
        config = load_config(write_config(tmp_path, tiny_config(shapes_data, "vqa", max_steps=1, grad_clip=0.0,
                                                                loss_weighting=weighting), f"{weighting}.yaml"))
        trainer = Trainer(config, tmp_path / weighting, log=lambda _: None)
        seen[weighting] = record_steps(trainer)
        trainer.train_step()
    for plain, projected in zip(seen["fixed"][0]["grads"], seen["pcgrad"][0]["grads"]):
        torch.testing.assert_close(projected, plain, rtol=1e-5, atol=1e-7)


def test_fixed_weighting_logs_the_configured_weights(shapes_data, tmp_path):
    config = two_tasks(shapes_data, max_steps=1)
    config["tasks"]["vqa"]["weight"] = 0.5
    trainer = Trainer(load_config(write_config(tmp_path, config)), tmp_path / "run", log=lambda _: None)
    values = trainer.train_step()
    assert (values["weight/vqa"], values["weight/shape"]) == (0.5, 1.0)


def test_gradient_combinations_need_every_task_at_each_step(shapes_data, tmp_path):
    config = two_tasks(shapes_data, loss_weighting="pcgrad", task_sampling="round_robin")
    with pytest.raises(ConfigError, match="train.loss_weighting: 'pcgrad' compares every task's gradient"):
        load_config(write_config(tmp_path, config))
    with pytest.raises(ConfigError, match="train.loss_weighting: expected one of fixed, uncertainty, gradnorm, "
                                          "pcgrad, got 'equal'"):
        load_config(write_config(tmp_path, two_tasks(shapes_data, loss_weighting="equal"), "b.yaml"))
