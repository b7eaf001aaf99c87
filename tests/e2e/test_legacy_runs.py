"""Run folders made by an earlier version still load, evaluate and predict, with the same numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from polymodal.api import load
from polymodal.data.manifest import read_manifest

LEGACY = Path(__file__).parents[1] / "fixtures" / "legacy_runs"
EXPECTED = json.loads((LEGACY / "expected.json").read_text())


def check_results_and_embeddings(name, expected, data):
    """Load run `name`, check its test-split results and (where recorded) the first four records'
    embeddings against `expected`; returns the model and those four records."""
    model = load(LEGACY / name)
    test = read_manifest(data / "test.jsonl", log=lambda _: None)
    results = model.evaluate(test)
    assert set(results) == set(expected["results"])
    for task, metrics in expected["results"].items():
        assert results[task] == pytest.approx(metrics, abs=1e-6), task
    first = test[:4]
    if "embed" in expected:
        embeddings = model.embed(images=[r["image"] for r in first], texts=[r["text"] for r in first])
        for modality, values in expected["embed"].items():
            torch.testing.assert_close(embeddings[modality], torch.tensor(values), atol=1e-5, rtol=1e-4)
    return model, first


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_legacy_run_gives_the_numbers_it_gave(name, shapes_data):
    expected = EXPECTED[name]
    model, first = check_results_and_embeddings(name, expected, shapes_data)
    if "answers" in expected:
        got = [model.answer(r["image"], r["question"], top_k=3) for r in first]
        for g, e in zip(got, expected["answers"]):
            assert [a for a, _ in g] == [a for a, _ in e]
            assert [p for _, p in g] == pytest.approx([p for _, p in e], abs=1e-5)
    if "labels" in expected:
        got = [model.classify(r["image"], top_k=2) for r in first]
        for g, e in zip(got, expected["labels"]):
            assert [a for a, _ in g] == [a for a, _ in e]
            assert [p for _, p in g] == pytest.approx([p for _, p in e], abs=1e-5)


EXPECTED_0_2 = json.loads((LEGACY / "expected-0.2.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED_0_2))
def test_a_run_of_version_0_2_gives_the_numbers_and_texts_it_gave(name, shapes_data):
    """Runs saved by 0.2 (b227257, before the restructuring): gated and GMU fusions under their old names,
    hard-negative matching, masked text and image modelling, an encoder-decoder and a decoder-only LM."""
    expected = EXPECTED_0_2[name]
    model, first = check_results_and_embeddings(name, expected, shapes_data)
    images = [r["image"] for r in first]
    if "captions" in expected:
        assert model.caption(images) == expected["captions"]
        assert model.caption(images, num_beams=3) == expected["captions_beam"]
        assert model.caption(images, sample=True, top_p=0.9, seed=3) == expected["captions_sampled"]
    if "answers" in expected:
        assert [model.answer(r["image"], r["question"]) for r in first] == expected["answers"]
    if "labels" in expected:
        got = [model.classify(image, top_k=2) for image in images]
        for g, e in zip(got, expected["labels"]):
            assert [a for a, _ in g] == [a for a, _ in e]
            assert [p for _, p in g] == pytest.approx([p for _, p in e], abs=1e-5)


def test_the_cli_evaluates_and_predicts_a_legacy_run(shapes_data):
    run = LEGACY / "joint-vqa"
    cli = [sys.executable, "-m", "polymodal.cli"]
    done = subprocess.run([*cli, "eval", str(run), "--data", str(shapes_data / "test.jsonl"), "--json"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["vqa"] == pytest.approx(EXPECTED["joint-vqa"]["results"]["vqa"], abs=1e-6)
    record = read_manifest(shapes_data / "test.jsonl", log=lambda _: None)[0]
    done = subprocess.run([*cli, "predict", str(run), "--image", record["image"], "--question", record["question"],
                           "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["answer"] == EXPECTED["joint-vqa"]["answers"][0][0][0]


def test_explain_says_why_late_fusion_has_nothing_to_show(shapes_data, tmp_path):
    from polymodal.errors import PolymodalError

    record = read_manifest(shapes_data / "test.jsonl", log=lambda _: None)[0]
    with pytest.raises(PolymodalError, match="LateFusion combines pooled vectors: there is no attention"):
        load(LEGACY / "dual-clip").explain(tmp_path / "x.png", image=record["image"])
    path = load(LEGACY / "joint-vqa").explain(tmp_path / "vqa.png", record["question"], image=record["image"])
    assert path.stat().st_size > 10_000

