"""An image tokenizer trains from the shipped recipe on GenEval-style shapes, and its codes go both ways
through the API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from polymodal.api import load
from polymodal.config import load_config
from polymodal.data.manifest import read_manifest
from polymodal.data.shapes_generation import synthesize_generation
from polymodal.errors import PolymodalError
from polymodal.metrics import psnr
from polymodal.training.trainer import train

CONFIG = Path(__file__).parents[2] / "src" / "polymodal" / "configs" / "tokenizer-image.yaml"


@pytest.fixture(scope="module")
def tokenizer_run(tmp_path_factory):
    data = tmp_path_factory.mktemp("generation")
    synthesize_generation(data, n_train=280, n_val=14, n_test=28, n_heldout=0, log=lambda _: None)
    run = tmp_path_factory.mktemp("tokenizer") / "run"
    train(load_config(CONFIG, [f"data.train={data / 'train.jsonl'}", f"data.val={data / 'val.jsonl'}",
                               f"data.test={data / 'test.jsonl'}", "train.max_steps=200", "train.batch_size=16",
                               "train.log_every=20", "train.val_every=0", "data.num_workers=0"]), run,
          log=lambda _: None)
    return run, data


def test_the_tokenizer_learns_to_reconstruct_the_shapes(tokenizer_run):
    run, data = tokenizer_run
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert losses[-1] < losses[0] / 2
    metrics = load(run).evaluate(read_manifest(data / "test.jsonl"))["reconstruct"]
    assert metrics["psnr"] > 20 and metrics["ssim"] > 0.7  # an untrained decoder: about 10 dB
    assert metrics["perplexity"] > 10  # more than a handful of codes in use


def test_codes_go_both_ways_through_the_api(tokenizer_run):
    run, data = tokenizer_run
    model = load(run)
    paths = [r["image"] for r in read_manifest(data / "test.jsonl")[:3]]
    codes = model.encode_tokens(paths)
    assert codes.shape == (3, 64) and codes.dtype == torch.long and int(codes.max()) < 1000
    assert torch.equal(model.encode_tokens(paths[1]), codes[1])  # one image: (N,)
    images = model.decode_tokens(codes)
    assert len(images) == 3 and images[0].size == (64, 64)
    original = torch.tensor([list(Image.open(p).convert("RGB").getdata()) for p in paths]).float() / 255
    decoded = torch.tensor([list(i.getdata()) for i in images]).float() / 255
    evaluated = [p["psnr"] for p in model.predict("reconstruct", read_manifest(data / "test.jsonl")[:3])]
    # decoded codes are the evaluated reconstruction, up to rounding to 8 bits
    torch.testing.assert_close(psnr(decoded, original), torch.tensor(evaluated), atol=0.3, rtol=0)
    with pytest.raises(PolymodalError, match=r"expected 64 codes per image \(a \(8, 8\) grid\)"):
        model.decode_tokens([1, 2, 3])
    with pytest.raises(PolymodalError, match="expected values from 0 to 999"):
        model.decode_tokens([1000] * 64)
