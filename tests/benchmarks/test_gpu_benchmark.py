"""`benchmarks/gpu.py` stays ready for the next GPU: its toy sizes run on the CPU and write every figure."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_gpu_benchmark_runs_at_toy_sizes_and_checks_the_decoded_tokens(tmp_path):
    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--tiny", "--parts", "matmul,decode",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures == json.loads(done.stdout.strip().splitlines()[-1])  # the file and the last line agree
    assert figures["device"] == "cpu" and figures["matmul_tflops"] > 0
    for batch in (1, 4):  # ours and HF generate on the same GPT-2 weights give the same greedy tokens
        assert figures[f"decode_batch{batch}_same_tokens"] is True
        assert figures[f"decode_batch{batch}_ratio"] == round(figures[f"decode_batch{batch}_ours_tokens_per_s"]
                                                              / figures[f"decode_batch{batch}_hf_tokens_per_s"], 3)
    bad = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--parts", "clip,fp8"],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "--parts: unknown fp8" in bad.stderr
