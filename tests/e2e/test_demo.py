"""`polymodal demo --quick`: the whole job on a small benchmark, report included."""

import json
import subprocess
import sys


def test_quick_demo_trains_every_model_and_writes_the_report(tmp_path):
    out = tmp_path / "runs" / "demo"
    # a relative --out, run from another folder, as `make demo` does
    r = subprocess.run([sys.executable, "-m", "polymodal.cli", "demo", "--quick", "--out", "runs/demo"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    report = out / "report"
    for name in ("report.md", "loss_curves.png", "vqa_examples.png", "retrieval_examples.png", "av_examples.png",
                 "results.json"):
        assert (report / name).stat().st_size > 0, name
    results = json.loads((report / "results.json").read_text())
    stats = json.loads((out / "data" / "stats.json").read_text())
    # even 40 steps beat answering the most common answer to everything, and retrieve far above chance
    assert results["vqa"]["vqa"]["accuracy"] > stats["single_answer_baseline"]["accuracy"] + 0.05
    assert results["clip"]["retrieval"]["text_to_image/R@10"] > 0.5
    assert "initialised" in r.stdout  # the VQA model started from the clip encoders
    assert {"video_qa", "sound"} <= set(results["av"])  # a video and an audio task were evaluated
    assert "accuracy/temporal" in results["av"]["video_qa"]
    for run in ("clip", "vqa", "av"):
        losses = [json.loads(line)["loss"] for line in (out / run / "metrics.jsonl").read_text().splitlines()
                  if "loss" in json.loads(line)]
        assert losses[-1] < losses[0]
