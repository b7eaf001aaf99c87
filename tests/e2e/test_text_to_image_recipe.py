"""The two-stage text-to-image recipe on a small GenEval-style set: a tokenizer run, then a language model
that writes its codes; the frozen tokenizer stays as trained, the run reloads and draws the same images,
and evaluation reports the GenEval-style score beside its baselines."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from polymodal.api import load
from polymodal.cli import main
from polymodal.config import load_config
from polymodal.data.manifest import read_manifest
from polymodal.data.shapes_generation import synthesize_generation
from polymodal.errors import ConfigError
from polymodal.training.trainer import train
from tests.conftest import own_task_data

CONFIGS = Path(__file__).parents[2] / "src" / "polymodal" / "configs"


def _sets(data: Path) -> list[str]:
    return [f"data.train={data / 'train.jsonl'}", f"data.val={data / 'val.jsonl'}", f"data.test={data / 'test.jsonl'}",
            "data.num_workers=0", "train.val_every=0"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    data = tmp_path_factory.mktemp("generation")
    synthesize_generation(data, n_train=280, n_val=14, n_test=14, n_heldout=0, log=lambda _: None)
    root = tmp_path_factory.mktemp("runs")
    train(load_config(CONFIGS / "tokenizer-image.yaml", [*_sets(data), "train.max_steps=60", "train.batch_size=16"]),
          root / "tokenizer", log=lambda _: None)
    sets = [*_sets(data), f"model.encoders.image.path={root / 'tokenizer'}", "model.decoder.width=64",
            "model.decoder.depth=2", "model.decoder.num_heads=4", "train.max_steps=120", "train.batch_size=16",
            "train.log_every=10", "tasks.draw.samples=2"]
    train(load_config(CONFIGS / "text-to-image.yaml", sets), root / "draw", log=lambda _: None)
    return root, data


def test_the_language_model_learns_the_codes_and_leaves_the_tokenizer_as_trained(runs):
    root, _ = runs
    losses = [json.loads(line)["loss"] for line in (root / "draw" / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert losses[-1] < losses[0] - 1.5  # from about ln(V) ≈ 7 towards the codes' entropy
    tokenizer = load_file(root / "tokenizer" / "model" / "model.safetensors")
    drawer = load_file(root / "draw" / "model" / "model.safetensors")
    prefix = "backbone.encoders.image."
    kept = {k: v for k, v in tokenizer.items() if k.startswith(prefix)}
    assert kept and all(torch.equal(drawer[k], v) for k, v in kept.items())  # never trained, EMA never moved
    decoder = {k[len("tasks.reconstruct.decoder."):]: v for k, v in tokenizer.items()
               if k.startswith("tasks.reconstruct.decoder.")}
    assert decoder and all(torch.equal(drawer[prefix + "pixel_decoder." + k], v) for k, v in decoder.items())


def test_a_reloaded_run_draws_the_same_images_and_evaluation_reports_the_baselines(runs, tmp_path):
    root, data = runs
    model = load(root / "draw")
    first = model.generate_image(["a red circle", "two squares"], n=2, seed=5)
    again = load(root / "draw").generate_image(["a red circle", "two squares"], n=2, seed=5)
    assert [[im.tobytes() for im in group] for group in first] == [[im.tobytes() for im in group] for group in again]
    assert first[0][0].size == (64, 64) and len(first) == 2 and len(first[0]) == 2
    other = model.generate_image("a red circle", n=2, seed=6)
    assert [im.tobytes() for im in other] != [im.tobytes() for im in first[0]]
    metrics = model.evaluate(read_manifest(data / "test.jsonl"))["draw"]
    for key in ("geneval", "geneval_unguided", "geneval_random", "geneval_ceiling", "geneval_retrieval"):
        assert key in metrics
    assert metrics["geneval_retrieval"] > metrics["geneval_random"]  # real training images, seen prompts
    assert main(["predict", str(root / "draw"), "--prompt", "a blue square", "--save", str(tmp_path / "x.png"),
                 "-n", "2"]) == 0
    assert (tmp_path / "x-0.png").is_file() and (tmp_path / "x-1.png").is_file()
    assert main(["eval", str(root / "draw"), "--data", str(data / "test.jsonl"), "--drawings",
                 str(tmp_path / "grid.png")]) == 0
    assert (tmp_path / "grid.png").stat().st_size > 10_000  # a row per category of the test set's prompts


def test_a_missing_or_wrong_tokenizer_run_is_a_clear_error(runs, tmp_path):
    root, data = runs
    with pytest.raises(ConfigError, match=r"model.encoders.image.path: no trained tokenizer there"):
        train(load_config(CONFIGS / "text-to-image.yaml", [*_sets(data), f"model.encoders.image.path={tmp_path}"]),
              tmp_path / "x", log=lambda _: None)
    with pytest.raises(ConfigError, match=r"set model.width: 64"):
        train(load_config(CONFIGS / "text-to-image.yaml", [*_sets(data), "model.width=32",
                                                           f"model.encoders.image.path={root / 'tokenizer'}"]),
              tmp_path / "y", log=lambda _: None)
    moved = tmp_path / "moved"
    shutil.copytree(root / "draw", moved)
    expected = load(root / "draw").generate_image("a circle", n=1)[0].tobytes()
    (root / "tokenizer").rename(root / "away")
    try:  # the run folder carries a copy of its tokenizer: it loads without the tokenizer's run
        assert load(moved).generate_image("a circle", n=1)[0].tobytes() == expected
    finally:
        (root / "away").rename(root / "tokenizer")


def test_train_cfg_dropout_is_every_generation_task_s_default(runs):
    root, data = runs
    from polymodal.builders import build_system

    config = load_config(CONFIGS / "text-to-image.yaml", [*_sets(data), f"model.encoders.image.path={root / 'tokenizer'}",
                                                          "train.cfg_dropout=0.25"])
    records = read_manifest(data / "train.jsonl")
    assert build_system(config, records).model.tasks["draw"].cfg_dropout == 0.1  # the task's own value wins
    del config.tasks["draw"]["cfg_dropout"]
    assert build_system(config, records).model.tasks["draw"].cfg_dropout == 0.25
    config.train.cfg_dropout = 1.5
    with pytest.raises(ConfigError, match=r"train.cfg_dropout: expected a share in \[0, 1\)"):
        build_system(config, records)


def test_a_parallel_decoder_trains_and_draws_in_a_few_passes(runs, tmp_path):
    root, data = runs
    sets = [*_sets(data), f"model.encoders.image.path={root / 'tokenizer'}", "model.decoder.width=64",
            "model.decoder.depth=2", "model.decoder.num_heads=4", "train.max_steps=80", "train.batch_size=16",
            "train.log_every=10", "tasks.draw.samples=2", "tasks.draw.decoding=parallel", "tasks.draw.steps=4"]
    train(load_config(CONFIGS / "text-to-image.yaml", sets), tmp_path / "par", log=lambda _: None)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "par" / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert losses[-1] < losses[0] - 1.0  # hidden codes: from ln(1000) ≈ 6.9 down
    model = load(tmp_path / "par")
    first = model.generate_image("a red circle", n=2, seed=1)
    assert [im.tobytes() for im in first] == [im.tobytes() for im in load(tmp_path / "par").generate_image(
        "a red circle", n=2, seed=1)]
    assert model.generate_image("a red circle", n=1, steps=1)[0].size == (64, 64)
    from polymodal.errors import PolymodalError
    with pytest.raises(PolymodalError, match="steps: 99 is for a parallel decoder"):
        model.generate_image("a red circle", steps=99)
    with pytest.raises(PolymodalError, match="decodes autoregressive"):
        load(root / "draw").generate_image("a red circle", steps=2)


def test_any_to_any_one_model_draws_and_captions_with_the_same_codes(runs, tmp_path):
    root, data = runs
    sets = [*_sets(data), *own_task_data(CONFIGS / "any-to-any.yaml", data), f"model.encoders.image.path={root / 'tokenizer'}",
            "model.decoder.width=64", "model.decoder.depth=2", "model.decoder.num_heads=4", "train.max_steps=160",
            "train.batch_size=16",
            "train.log_every=1", "tasks.draw.samples=1"]  # one task a step (round robin): log every step
    train(load_config(CONFIGS / "any-to-any.yaml", sets), tmp_path / "a2a", log=lambda _: None)
    lines = [json.loads(line) for line in (tmp_path / "a2a" / "metrics.jsonl").read_text().splitlines()]
    for task in ("draw", "caption"):  # each task's own loss falls (the mean of its first and last ten steps)
        losses = [line[f"loss/{task}"] for line in lines if f"loss/{task}" in line]
        assert len(losses) == 80 and sum(losses[-10:]) < sum(losses[:10]) - 10.0, (task, losses)
    model = load(tmp_path / "a2a")
    lm = model.system.model.backbone.decoder
    assert model.system.model.tasks["draw"].decoder.module is lm and model.system.model.tasks["caption"].decoder.module is lm
    record = read_manifest(data / "test.jsonl")[0]
    caption = model.caption(record["image"], task="caption")
    assert isinstance(caption, str) and caption.split()  # words from the image's codes
    assert model.generate_image("a red circle", n=1, task="draw")[0].size == (64, 64)
