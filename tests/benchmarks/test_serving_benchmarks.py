"""`benchmarks/serve.py` and `benchmarks/search_index.py` stay runnable: at toy sizes they run and their last
line holds every figure, consistent with the lines before it."""

import json
import os
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


def test_the_search_benchmark_compares_exact_and_hnsw():
    lines, figures = _run("benchmarks/search_index.py", "--sizes", "500,2000", "--queries", "20")
    assert [row["n"] for row in figures["sizes"]] == [500, 2000]
    for row in figures["sizes"]:
        assert row["hnsw_recall_at_10"] > 0.9  # HNSW at efSearch 128 finds nearly all of a small set's top 10
    assert len(lines) == 3


def test_the_serving_benchmark_measures_batching_on_and_off():
    _, figures = _run("benchmarks/serve.py", "--steps", "1", "--requests", "24", "--chat-requests", "4",
                      "--concurrency", "1,4", "--max-tokens", "2")
    for model in ("shapes-clip", "shapes-clip-minilm"):
        runs = figures["embeddings"][model]
        assert set(runs) == {"on/c1", "on/c4", "off/c1", "off/c4"}
        assert figures["embed_batching_speedup"][model] == round(runs["on/c4"]["rps"] / runs["off/c4"]["rps"], 2)
        assert all(r["p50_ms"] <= r["p99_ms"] for r in runs.values())
    chat = figures["chat"]
    assert figures["chat_batching_speedup"] == round(chat["on/c4"]["rps"] / chat["off/c4"]["rps"], 2)
    assert set(chat["on/stream_c8"]) == {"ttft_ms", "tpot_ms"} and figures["concurrency"] == 4
