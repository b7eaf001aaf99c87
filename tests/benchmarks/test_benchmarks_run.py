"""`benchmarks/serve.py`, `search_index.py` and `generation.py` stay runnable: at toy sizes they run and their last
line holds every figure, consistent with the lines before it."""

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str) -> tuple[list[str], dict]:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=900, cwd=REPO,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    return lines, json.loads(lines[-1])


def _median_ratio(runs: dict) -> float:
    """The speedup as the benchmark defines it: the median over rounds of on / off requests/s at the top
    concurrency (4 here)."""
    return round(statistics.median(a / b for a, b in zip(runs["on/c4"]["rounds_rps"], runs["off/c4"]["rounds_rps"])), 2)


def test_the_search_benchmark_compares_exact_and_hnsw():
    lines, figures = _run("benchmarks/search_index.py", "--sizes", "500,2000", "--queries", "20")
    assert [row["n"] for row in figures["sizes"]] == [500, 2000]
    for row in figures["sizes"]:
        assert row["hnsw_recall_at_10"] > 0.9  # HNSW at efSearch 128 finds nearly all of a small set's top 10
    assert len(lines) == 3


def test_the_serving_benchmark_measures_batching_on_and_off():
    _, figures = _run("benchmarks/serve.py", "--steps", "1", "--requests", "24", "--minilm-requests", "8",
                      "--chat-requests", "4", "--concurrency", "1,4", "--max-tokens", "2", "--rounds", "2")
    for model in ("shapes-clip", "shapes-clip-minilm"):
        runs = figures["embeddings"][model]
        assert set(runs) == {"on/c1", "on/c4", "off/c1", "off/c4"}
        assert figures["embed_batching_speedup"][model] == _median_ratio(runs)
        for r in runs.values():  # each setting: its median round's figures, and every round's requests/s
            assert len(r["rounds_rps"]) == 2 and r["rps"] == sorted(r["rounds_rps"])[1] and r["p50_ms"] <= r["p99_ms"]
    chat = figures["chat"]
    assert figures["chat_batching_speedup"] == _median_ratio(chat)
    assert set(chat["on/stream_c8"]) == {"ttft_ms", "tpot_ms"} and figures["concurrency"] == 4


def test_the_generation_benchmark_reports_alone_and_under_its_own_load():
    lines, figures = _run("benchmarks/generation.py", "--layers", "1", "--width", "32", "--heads", "2", "--vocab",
                          "100", "--prompt", "8", "--new-tokens", "4", "--iters", "1", "--load", "1")
    for suffix in ("", "_loaded"):
        rows = figures[f"tokens_per_s{suffix}"]
        assert set(rows) == {"batch1", "batch16"}
        assert figures[f"hf_ratio{suffix}"] == min(r["cached"] / r["hf"] for r in rows.values())
    assert figures["sizes"]["load_processes"] == 1 and len(lines) == 5  # 2 alone, 2 loaded, the JSON
