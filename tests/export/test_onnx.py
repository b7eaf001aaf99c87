"""`polymodal export --format onnx`: each encoder and labelling head as a graph whose onnxruntime outputs equal
the Python API's on real inputs (atol 1e-4), at batch sizes other than the export's."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime
import pytest
import torch

from polymodal.api import load
from polymodal.cli import main
from polymodal.data.manifest import read_manifest
from serving.conftest import train_shipped


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shapes_data):
    root = tmp_path_factory.mktemp("onnx-runs")
    return {"clip": train_shipped("shapes-clip.yaml", shapes_data, root / "clip"),
            "vqa": train_shipped("shapes-vqa.yaml", shapes_data, root / "vqa")}


def _session(folder, name):
    return onnxruntime.InferenceSession(str(folder / f"{name}.onnx"), providers=["CPUExecutionProvider"])


def _text_inputs(model, texts):
    processor = model.system.processors["text"]
    ids, mask = processor.tokenizer.encode_batch(texts, processor.max_length)
    pad = processor.max_length - ids.shape[1]
    return {"text.data": np.pad(ids.numpy(), ((0, 0), (0, pad)), constant_values=processor.tokenizer.pad_id),
            "text.mask": np.pad(mask.numpy(), ((0, 0), (0, pad)), constant_values=False)}


def test_encoders_give_the_python_api_embeddings(runs, shapes_data, tmp_path):
    assert main(["export", str(runs["clip"]), "--format", "onnx", "--out", str(tmp_path / "onnx")]) == 0
    manifest = json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert set(manifest["graphs"]) == {"encoder-image", "encoder-text"}
    assert manifest["not_exported"] == {"retrieval": "ContrastiveTask: not a labelling head"}
    model = load(runs["clip"], device="cpu")
    records = read_manifest(shapes_data / "test.jsonl")[:5]
    images = [r["image"] for r in records]
    texts = [r["text"] for r in records]
    expected = model.embed(images=images, texts=texts)
    pixels = model._inputs(image=images)["image"]["data"].numpy()
    (got,) = _session(tmp_path / "onnx", "encoder-image").run(["embedding"], {"image.data": pixels})
    np.testing.assert_allclose(got, expected["image"].numpy(), atol=1e-4)
    (got,) = _session(tmp_path / "onnx", "encoder-text").run(["embedding"], _text_inputs(model, texts))
    np.testing.assert_allclose(got, expected["text"].numpy(), atol=1e-4)
    assert (tmp_path / "onnx" / "tokenizer.json").is_file()


def test_a_vqa_head_gives_the_python_api_probabilities(runs, shapes_data, tmp_path):
    assert main(["export", str(runs["vqa"]), "--format", "onnx", "--out", str(tmp_path / "onnx")]) == 0
    manifest = json.loads((tmp_path / "onnx" / "export.json").read_text())
    model = load(runs["vqa"], device="cpu")
    records = read_manifest(shapes_data / "test.jsonl")[:7]
    labels, probs = model.label_probabilities([{"image": r["image"], "text": r["question"]} for r in records], task="vqa")
    assert manifest["graphs"]["task-vqa"]["labels"] == labels
    feeds = {"image.data": model._inputs(image=[r["image"] for r in records])["image"]["data"].numpy(),
             **_text_inputs(model, [r["question"] for r in records])}
    (got,) = _session(tmp_path / "onnx", "task-vqa").run(["probabilities"], feeds)
    np.testing.assert_allclose(got, probs.numpy(), atol=1e-4)
    assert [labels[i] for i in got.argmax(1)] == [model.answer(r["image"], r["question"]) for r in records]
