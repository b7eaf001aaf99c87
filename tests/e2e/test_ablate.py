"""`polymodal ablate`: every fusion variant on the same data, seed and steps, with its report."""

import json
import subprocess
import sys

import pytest
import yaml

from conftest import tiny_config, write_config


def polymodal(*args):
    return subprocess.run([sys.executable, "-m", "polymodal.cli", *map(str, args)], capture_output=True, text=True)


def test_ablate_trains_each_variant_and_reports_it(shapes_data, tmp_path):
    config = write_config(tmp_path, tiny_config(shapes_data, "vqa", max_steps=3))
    out = tmp_path / "ablation"
    r = polymodal("ablate", config, "--fusion", "early,late,cross", "--out", out, "--set", "train.max_steps=2")
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "ablation.json").read_text())
    assert list(summary) == ["early", "late", "cross"]
    for name, variant in summary.items():
        resolved = yaml.safe_load((out / name / "config.yaml").read_text())
        assert resolved["model"]["fusion"]["type"] == name and "type" not in resolved["model"]
        assert resolved["train"]["max_steps"] == 2
        # the config's joint settings carry over to every fusion that takes them (late: its unimodal streams)
        assert resolved["model"]["fusion"]["depth"] == 1 and resolved["model"]["fusion"]["num_heads"] == 2
        # the reported results are the run's own evaluation on the held-out split
        ev = polymodal("eval", out / name, "--data", shapes_data / "val.jsonl", "--json")
        assert json.loads(ev.stdout)["vqa"] == pytest.approx(variant["results"]["vqa"])
        assert variant["samples_per_s"] > 0 and variant["wall_s"] > 0
    # cross = late's unimodal streams plus the cross-attention in each layer
    assert summary["early"]["params"] < summary["late"]["params"] < summary["cross"]["params"]
    table = (out / "ablation.md").read_text()
    for name in summary:
        assert f"| {name} | {summary[name]['params']:,} |" in table
    assert "vqa/accuracy/spatial" in table and (out / "ablation.png").stat().st_size > 0


def test_a_second_ablation_keeps_what_was_done_and_trains_only_the_new_variants(shapes_data, tmp_path):
    config = write_config(tmp_path, tiny_config(shapes_data, "vqa", max_steps=2))
    out = tmp_path / "ablation"
    assert polymodal("ablate", config, "--fusion", "late", "--out", out).returncode == 0
    first = json.loads((out / "ablation.json").read_text())
    r = polymodal("ablate", config, "--fusion", "late,perceiver", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "ablation: late (1 of 2) kept" in r.stdout and "ablation: perceiver (2 of 2)\n" in r.stdout
    second = json.loads((out / "ablation.json").read_text())
    assert list(second) == ["late", "perceiver"] and second["late"] == first["late"]
    # another step budget is another config: the variant is trained again
    r = polymodal("ablate", config, "--fusion", "late", "--out", out, "--set", "train.max_steps=3")
    assert "kept" not in r.stdout and json.loads((out / "ablation.json").read_text())["late"] != first["late"]


def test_an_unknown_fusion_is_refused_before_any_training(shapes_data, tmp_path):
    config = write_config(tmp_path, tiny_config(shapes_data, "vqa"))
    r = polymodal("ablate", config, "--fusion", "early,blend", "--out", tmp_path / "a")
    assert r.returncode == 1 and "--fusion: expected names from early, late, gated_sum, cross, coattn, gated_cross_attention, perceiver, got 'blend'" in r.stderr
    assert not (tmp_path / "a" / "early").exists()


def test_modality_ablation_trains_dropout_no_dropout_and_without(shapes_data, tmp_path):
    config = write_config(tmp_path, tiny_config(shapes_data, "vqa", max_steps=2))
    out = tmp_path / "robust"
    r = polymodal("ablate", config, "--drop-modality", "image", "--dropout", "0.3", "--out", out)
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "ablation.json").read_text())
    assert list(summary) == ["dropout", "no_dropout", "without_image"]
    resolved = {name: yaml.safe_load((out / name / "config.yaml").read_text()) for name in summary}
    assert resolved["dropout"]["train"]["modality_dropout"] == {"image": 0.3}
    assert resolved["no_dropout"]["train"]["modality_dropout"] == {}
    assert "image" not in resolved["without_image"]["model"]["encoders"]
    assert resolved["without_image"]["tasks"]["vqa"]["inputs"] == {"text": "question"}
    # each figure is the run's own evaluation, with the image removed where the table says so
    for name in ("dropout", "no_dropout"):
        ev = polymodal("eval", out / name, "--data", shapes_data / "val.jsonl", "--drop-modality", "image", "--json")
        assert json.loads(ev.stdout)["vqa"] == pytest.approx(summary[name]["results_without_image"]["vqa"])
    assert "results_without_image" not in summary["without_image"]
    table = (out / "ablation.md").read_text()
    assert "| dropout | image removed |" in table and "| without_image | without image (trained so) |" in table


def test_a_modality_a_task_cannot_lack_is_refused(shapes_data, tmp_path):
    config = write_config(tmp_path, tiny_config(shapes_data, "vqa"))
    r = polymodal("ablate", config, "--drop-modality", "text", "--out", tmp_path / "a")
    assert r.returncode == 1 and "tasks.vqa: a vqa task cannot do without 'text'" in r.stderr
    r = polymodal("ablate", config, "--drop-modality", "audio", "--out", tmp_path / "a")
    assert r.returncode == 1 and "--drop-modality: expected one of the config's encoders (image, text), got 'audio'" in r.stderr
