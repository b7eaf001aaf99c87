"""Device, precision and loader-worker settings; the trainer's step leaves its numbers on the device until a
log step, and the log says how long the step waited for data. Tests fake the machine (GPUs, cores) so
they give the same answer wherever they run."""

import json
import time

import pytest
import torch

import polymodal
from conftest import tiny_config, write_config
from polymodal import devices
from polymodal.config import load_config
from polymodal.data.loader import TaskDataset
from polymodal.devices import resolve_device, resolve_precision, resolve_workers
from polymodal.errors import ConfigError, PolymodalError
from polymodal.training.trainer import Trainer


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_auto_takes_this_process_gpu_and_cuda_n_is_checked_against_the_machine(two_gpus):
    assert resolve_device("auto", local_rank=1) == torch.device("cuda:1")
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda:1")
    assert resolve_device("CUDA:0") == torch.device("cuda:0")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(PolymodalError, match=r"train\.device: 'cuda:2' asks for GPU 2, but this machine has 2 "
                                             r"\(cuda:0 to cuda:1\)"):
        resolve_device("cuda:2", where="train.device")
    for bad in ("gpu", "cuda:x", "cuda:-1"):
        with pytest.raises(PolymodalError, match="device: expected 'auto', 'cpu', 'cuda' or 'cuda:N'|cuda:N"):
            resolve_device(bad)


def test_without_a_gpu_auto_is_the_cpu_and_cuda_is_an_error(no_gpu):
    assert resolve_device("auto", local_rank=3) == torch.device("cpu")
    with pytest.raises(PolymodalError, match="'cuda' asks for a CUDA GPU, but torch sees none"):
        resolve_device("cuda")


def test_precision_auto_is_bf16_only_on_a_gpu_that_has_it(two_gpus, monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_precision("auto", cpu) == "fp32" and resolve_precision("auto", gpu) == "bf16"
    assert resolve_precision("bf16", cpu) == "bf16" and resolve_precision("fp32", gpu) == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla V100")
    assert resolve_precision("auto", gpu) == "fp32"
    with pytest.raises(PolymodalError, match="Tesla V100 has no bf16"):
        resolve_precision("bf16", gpu)
    with pytest.raises(PolymodalError, match="train.precision: expected one of auto, fp32, bf16, got 'fp16'"):
        resolve_precision("fp16", cpu)


@pytest.mark.parametrize("cores, device, expected", [(16, "cuda:0", 8), (6, "cuda:0", 6), (2, "cpu", 1),
                                                    (1, "cpu", 0), (32, "cpu", 1)])
def test_auto_workers_are_the_cores_up_to_eight_on_a_gpu_and_one_beside_the_model_on_a_cpu(
        monkeypatch, cores, device, expected):
    monkeypatch.setattr(devices, "available_cores", lambda: cores)
    assert resolve_workers("auto", torch.device(device)) == expected
    assert resolve_workers(3, torch.device(device)) == 3


def test_bad_device_settings_name_their_key(shapes_data, tmp_path):
    base = tiny_config(shapes_data, "vqa")
    cases = {("train", "device", "gpu"): "train.device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'",
             ("train", "precision", "fp16"): "train.precision: expected one of auto, fp32, bf16, got 'fp16'",
             ("data", "num_workers", "many"): "data.num_workers: expected 'auto' or a number",
             ("data", "num_workers", -1): "data.num_workers: expected 'auto' or a number"}
    for (section, key, value), message in cases.items():
        config = {**base, section: {**base[section], key: value}}
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_config(write_config(tmp_path, config))


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_losses_leave_the_device_only_at_log_steps_and_the_log_has_the_data_wait(shapes_data, tmp_path,
                                                                                  monkeypatch):
    config = load_config(write_config(tmp_path, tiny_config(shapes_data, "vqa", max_steps=7, log_every=3,
                                                            batch_size=8)))
    config.data.num_workers = 0  # the slowed loader below runs in this process
    lines = []
    trainer = Trainer(config, tmp_path / "run", log=lines.append)
    assert "device cpu, precision fp32, 0 loader workers per task group" in lines
    reads, numbers = [], trainer._numbers

    def counted(totals):
        reads.append(trainer.step)
        return numbers(totals)

    trainer._numbers = counted
    slow, real, late = TaskDataset.__getitem__, time.perf_counter, [0.0]

    def slow_item(self, key):  # 8 examples × 10 s of the clock's time a step: far longer than a tiny model's
        late[0] += 10.0        # step however busy the machine (the clock is moved, nothing sleeps)
        return slow(self, key)

    monkeypatch.setattr(TaskDataset, "__getitem__", slow_item)
    monkeypatch.setattr(time, "perf_counter", lambda: real() + late[0])
    trainer.fit()
    assert reads == [3, 6, 7]  # after steps 3, 6 and the last: nowhere else
    logged = [r for r in _metrics(tmp_path / "run") if "loss" in r]
    assert [r["step"] for r in logged] == [3, 6, 7]
    assert all(r["data_wait"] > 0.5 for r in logged), [r["data_wait"] for r in logged]


def test_fast_data_is_a_small_share_of_the_step(shapes_data, tmp_path):
    config = load_config(write_config(tmp_path, tiny_config(shapes_data, "vqa", max_steps=6, log_every=3,
                                                            batch_size=8)))
    config.data.num_workers = 0
    trainer = Trainer(config, tmp_path / "run", log=lambda _: None)
    slow_forward = trainer.model.forward

    def slow(*args, **kwargs):  # the model takes 50 ms a step: the data, about 1 ms, is a few per cent
        time.sleep(0.05)
        return slow_forward(*args, **kwargs)

    trainer.model.forward = slow
    trainer.fit()
    logged = [r for r in _metrics(tmp_path / "run") if "loss" in r]
    assert all(r["data_wait"] < 0.3 for r in logged[1:]), [r["data_wait"] for r in logged]


def test_load_puts_the_model_on_the_device_asked_and_returns_cpu_tensors(shapes_data, tmp_path, no_gpu):
    config = load_config(write_config(tmp_path, tiny_config(shapes_data, "clip", max_steps=2)))
    polymodal.train(config, tmp_path / "run")
    model = polymodal.load(tmp_path / "run", device="cpu")
    assert model.device == torch.device("cpu")
    assert {p.device.type for p in model.system.model.parameters()} == {"cpu"}
    assert model.embed(texts=["a red circle"])["text"].device.type == "cpu"
    with pytest.raises(PolymodalError, match="'cuda' asks for a CUDA GPU, but torch sees none"):
        polymodal.load(tmp_path / "run", device="cuda")
