"""Know your speed: FLOPs counted per step, the chip's peak, text tokens per batch, and the log's samples/s,
tokens/s and MFU computed from them over the same interval."""

import json

import pytest
import torch

from conftest import tiny_config, write_config
from polymodal.config import load_config
from polymodal.errors import ConfigError
from polymodal.training import speed
from polymodal.training.progress import speed_text
from polymodal.training.speed import FlopsPerStep, peak_tflops, text_tokens
from polymodal.training.trainer import Trainer


def test_a_step_counts_the_forward_and_backward_products_by_hand():
    layer, second = torch.nn.Linear(64, 128), torch.nn.Linear(128, 10)
    x = torch.randn(32, 64)  # no gradient for the input: the first layer's input gradient is not computed
    counter = FlopsPerStep()
    with counter.count(["a"]):
        second(layer(x)).sum().backward()
    forward = 2 * 32 * (64 * 128 + 128 * 10)
    weight_grads = forward
    input_grad_of_second = 2 * 32 * 128 * 10
    assert counter.known(["a"]) and not counter.known(["b"])
    assert counter[["a"]] == forward + weight_grads + input_grad_of_second


@pytest.mark.parametrize("name, precision, expected", [
    ("NVIDIA H200", "bf16", 989.0), ("NVIDIA H100 80GB HBM3", "bf16", 989.0), ("NVIDIA H100 PCIe", "bf16", 756.0),
    ("NVIDIA A100-SXM4-80GB", "bf16", 312.0), ("NVIDIA A10", "bf16", 125.0), ("NVIDIA L40S", "fp32", 183.0),
    ("NVIDIA L4", "bf16", 121.0), ("NVIDIA H100 80GB HBM3", "fp32", 494.0), ("Tesla T4", "bf16", None)])
def test_the_peak_is_the_longest_matching_gpu_name_at_the_precision(monkeypatch, name, precision, expected):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: name)
    assert peak_tflops(torch.device("cuda:0"), precision) == expected


def test_a_cpu_has_a_peak_only_when_given():
    assert peak_tflops(torch.device("cpu"), "fp32") is None
    assert peak_tflops(torch.device("cpu"), "fp32", override=2.5) == 2.5
    assert all(bf16 >= tf32 for bf16, tf32 in speed.PEAK_TFLOPS.values())


def test_text_tokens_count_the_masks_of_token_ids_only():
    batch = {"inputs": {"text": {"data": torch.tensor([[5, 6, 0], [7, 0, 0]]),
                                 "mask": torch.tensor([[True, True, False], [True, False, False]])},
                        "audio": {"data": torch.randn(2, 4, 3), "mask": torch.ones(2, 4, dtype=torch.bool)}},
             "target": {"caption": {"ids": torch.tensor([[1, 2, 3, 4]]), "mask": torch.tensor([[1, 1, 1, 0]]),
                                    "loss_mask": torch.tensor([[0, 1, 1, 0]])}}}
    assert int(text_tokens(batch)) == 3 + 3  # the question's real tokens and the caption's; not the audio frames
    assert text_tokens({"inputs": {"image": {"data": torch.randn(2, 3, 8, 8)}}, "target": torch.tensor([1, 0])}) is None


def test_the_speed_line_shows_what_was_measured():
    assert speed_text({"samples_per_s": 221.4, "data_wait": 0.021}) == "221 samples/s  data wait 2%"
    assert speed_text({"samples_per_s": 221.4, "tokens_per_s": 6310.0, "data_wait": 0.021, "mfu": 0.3114}) == \
        "221 samples/s  6.3k tokens/s  data wait 2%  MFU 31.1%"


def test_the_log_reports_tokens_and_mfu_from_the_counted_flops(shapes_data, tmp_path):
    config = load_config(write_config(tmp_path, tiny_config(shapes_data, "vqa", max_steps=6, log_every=2,
                                                            batch_size=8, peak_tflops=0.5)))
    trainer = Trainer(config, tmp_path / "run", log=lambda _: None)
    trainer.fit()
    (flops,) = trainer.flops.flops.values()
    assert flops > 0
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in logged if "loss" in r]
    assert [r["step"] for r in logged] == [2, 4, 6]
    for record in logged:
        seconds_per_step = 8 / record["samples_per_s"]
        # the FLOPs of a step, from the MFU and the step time of the same interval
        assert record["mfu"] * 0.5e12 * seconds_per_step == pytest.approx(flops, rel=1e-6)
        tokens = record["tokens_per_s"] * seconds_per_step * 2  # in the 2 steps of the interval
        assert tokens == pytest.approx(round(tokens), abs=1e-3)
        assert 2 * 8 * 2 <= tokens <= 2 * 8 * 16  # two batches of 8 questions of 2 to 16 tokens


def test_peak_tflops_must_be_positive(shapes_data, tmp_path):
    config = tiny_config(shapes_data, "vqa", peak_tflops=0)
    with pytest.raises(ConfigError, match="train.peak_tflops: expected a positive number of TFLOP/s, got 0"):
        load_config(write_config(tmp_path, config))
