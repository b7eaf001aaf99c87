"""Decoding threads (`GenerationSettings.threads`): one CPU thread for small steps or on a busy machine,
torch's own setting back afterwards, the same tokens either way; the busy test read from /proc."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from polymodal.generation import GenerationSettings, decoding_threads, generate, machine_busy
from polymodal.models.gpt2 import decoder_from_gpt2


def fake_proc(root: Path, running: int, states: list[str]) -> Path:
    """A /proc with loadavg's running count and this process's threads in `states`."""
    root.mkdir(parents=True)
    (root / "loadavg").write_text(f"0.50 0.40 0.30 {running}/300 4242\n")
    for i, state in enumerate(states):
        task = root / "self" / "task" / str(100 + i)
        task.mkdir(parents=True)
        task.joinpath("stat").write_text(f"{100 + i} (python (x) y) {state} 1 2 3\n")  # a name with ")" in it
    return root


def test_busy_means_as_many_other_runnable_tasks_as_cores(tmp_path):
    # 3 running, 1 of them ours: 2 others on 2 cores is busy; on 3 cores it is not
    proc = fake_proc(tmp_path / "a", 3, ["R", "S", "S"])
    assert machine_busy(proc=proc, cores=2) and not machine_busy(proc=proc, cores=3)
    # our own running threads do not count: 3 running, all ours
    proc = fake_proc(tmp_path / "b", 3, ["R", "R", "R"])
    assert not machine_busy(proc=proc, cores=1)


def _spin(stop) -> None:
    while not stop.is_set():
        sum(range(10_000))


def test_a_loaded_machine_reads_busy():
    cores = 2
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    workers = [context.Process(target=_spin, args=(stop,), daemon=True) for _ in range(cores)]
    for w in workers:
        w.start()
    try:
        time.sleep(1.0)
        assert machine_busy(cores=cores)  # two spinning processes (and whatever else runs) on two cores
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=10)


class _Session:
    def __init__(self, module: torch.nn.Module):
        self.decoder = module


@pytest.fixture()
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_small_steps_decode_on_one_thread_and_the_setting_comes_back(two_threads, monkeypatch):
    monkeypatch.setattr("polymodal.generation.machine_busy", lambda: False)
    small = _Session(torch.nn.Linear(100, 100))  # 10 100 parameters
    cpu = torch.device("cpu")
    with decoding_threads(GenerationSettings(), small, rows=4, device=cpu):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    large = _Session(torch.nn.Linear(1000, 1000))  # 1 001 000 parameters × 16 rows > SMALL_STEP
    with decoding_threads(GenerationSettings(), large, rows=16, device=cpu):
        assert torch.get_num_threads() == 2
    monkeypatch.setattr("polymodal.generation.machine_busy", lambda: True)
    with decoding_threads(GenerationSettings(), large, rows=16, device=cpu):
        assert torch.get_num_threads() == 1  # busy: one thread whatever the size
    with decoding_threads(GenerationSettings(threads=2), small, rows=1, device=cpu):
        assert torch.get_num_threads() == 2  # a given count wins
    with pytest.raises(RuntimeError), decoding_threads(GenerationSettings(), small, rows=1, device=cpu):
        raise RuntimeError("a failing step")
    assert torch.get_num_threads() == 2
    with pytest.raises(ValueError, match="threads"):
        GenerationSettings(threads=-1)


def test_the_tokens_do_not_depend_on_the_threads(two_threads):
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=32, n_embd=32, n_layer=2, n_head=2)).eval()
    ours = decoder_from_gpt2(hf)
    ids = torch.randint(1, 50, (3, 6))
    runs = [generate(lambda r: ours.session(repeat=r), ids, None, GenerationSettings(max_new_tokens=8, threads=t))
            for t in (1, 2)]
    assert runs[0] == runs[1]
    assert runs[0] == hf.generate(input_ids=ids, max_new_tokens=8, do_sample=False,
                                  pad_token_id=0)[:, 6:].tolist()
