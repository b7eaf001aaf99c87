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
        if name != "late":  # the config's joint settings carry over to the fusions that take them
            assert resolved["model"]["fusion"]["depth"] == 1 and resolved["model"]["fusion"]["num_heads"] == 2
        # the reported results are the run's own evaluation on the held-out split
        ev = polymodal("eval", out / name, "--data", shapes_data / "val.jsonl", "--json")
        assert json.loads(ev.stdout)["vqa"] == pytest.approx(variant["results"]["vqa"])
        assert variant["samples_per_s"] > 0 and variant["wall_s"] > 0
    assert summary["late"]["params"] < summary["early"]["params"] < summary["cross"]["params"]
    table = (out / "ablation.md").read_text()
    for name in summary:
        assert f"| {name} | {summary[name]['params']:,} |" in table
    assert "vqa/accuracy/spatial" in table and (out / "ablation.png").stat().st_size > 0


def test_an_unknown_fusion_is_refused_before_any_training(shapes_data, tmp_path):
    config = write_config(tmp_path, tiny_config(shapes_data, "vqa"))
    r = polymodal("ablate", config, "--fusion", "early,blend", "--out", tmp_path / "a")
    assert r.returncode == 1 and "--fusion: expected names from early, late, cross, coattn, gated, perceiver, got 'blend'" in r.stderr
    assert not (tmp_path / "a" / "early").exists()
