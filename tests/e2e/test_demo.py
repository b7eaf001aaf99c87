"""`polymodal demo --quick`: the whole job on a small benchmark, report included."""

import json
import subprocess
import sys

import yaml


def test_quick_demo_trains_every_model_and_writes_the_report(tmp_path):
    out = tmp_path / "runs" / "demo"
    # a relative --out, run from another folder, as `make demo` does; a seed other than the default
    r = subprocess.run([sys.executable, "-m", "polymodal.cli", "demo", "--quick", "--out", "runs/demo", "--seed", "1"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    report = out / "report"
    for name in ("report.md", "loss_curves.png", "vqa_examples.png", "retrieval_examples.png", "av_examples.png",
                 "results.json", "explain_0.png", "explain_2.png", "caption_examples.png", "drawings.png"):
        assert (report / name).stat().st_size > 0, name
    results = json.loads((report / "results.json").read_text())
    stats = json.loads((out / "data" / "stats.json").read_text())
    # even 40 steps beat answering the most common answer to everything, and retrieve far above chance
    assert results["vqa"]["vqa"]["accuracy"] > stats["single_answer_baseline"]["accuracy"] + 0.05
    assert results["pretrain"]["retrieval"]["text_to_image/R@10"] > 0.5
    assert set(results["pretrain"]) == {"retrieval"}  # contrastive pre-training
    for run in ("pretrain", "vqa", "vqa_10pct_scratch", "caption", "av", "tokenizer", "draw"):  # --seed reached every run
        assert yaml.safe_load((out / run / "config.yaml").read_text())["train"]["seed"] == 1, run
    vqa_train = yaml.safe_load((out / "vqa" / "config.yaml").read_text())["train"]
    # the VQA fine-tuning: new layers at 3e-3, the pre-trained encoders at a third of it
    assert vqa_train["lr"] == 3.0e-3 and vqa_train["lr_mult"] == {"backbone.encoders": 0.33}
    assert "initialised" in r.stdout  # the VQA model started from the pre-trained model
    # the two-stage flow: 10% of the labels, fine-tuned from the pre-trained model and from scratch
    assert {"vqa_10pct", "vqa_10pct_scratch"} <= set(results)
    assert {"video_qa", "sound"} <= set(results["av"])  # a video and an audio task were evaluated
    assert "accuracy/temporal" in results["av"]["video_qa"]
    # each modality removed in turn: the answers without the image are the model's own under --drop-modality
    removed = json.loads((report / "removed.json").read_text())
    # a task that needs the removed modality is left out (VQA its question, sound classification its
    # audio), and so is one that never reads it (sound classification the video or the question)
    assert set(removed["vqa"]) == {"image"} and set(removed["av"]) == {"audio", "video"}
    assert set(removed["av"]["audio"]) == {"video_qa"} and set(removed["av"]["video"]) == {"video_qa"}
    ev = subprocess.run([sys.executable, "-m", "polymodal.cli", "eval", str(out / "vqa"), "--data",
                         str(out / "data" / "test.jsonl"), "--drop-modality", "image", "--json"],
                        capture_output=True, text=True)
    assert json.loads(ev.stdout)["vqa"]["accuracy"] == removed["vqa"]["image"]["vqa"]["accuracy"]
    text = (report / "report.md").read_text()
    assert "## Each modality removed in turn" in text and "| vqa | image | vqa | accuracy |" in text
    assert "![explanation](explain_0.png)" in text and "![caption examples](caption_examples.png)" in text
    assert "## Pre-training, then fine-tuning on a fraction of the labels" in text and "Seed 1 " in text
    # the 10%-label runs are compared in their own section, not among the demo's models
    assert "| vqa | vqa | accuracy |" in text and "| vqa_10pct" not in text
    assert (report / "two_stage.png").stat().st_size > 0
    assert set(results["caption"]["caption"]) == {"bleu4", "cider", "exact_match", "n"}
    # text to image in two stages: the language model writes the codes of the demo's own tokenizer
    draw = yaml.safe_load((out / "draw" / "config.yaml").read_text())
    assert draw["model"]["encoders"]["image"]["path"] == str(out / "tokenizer")
    assert {"geneval", "geneval_random", "geneval_retrieval"} <= set(results["draw"]["draw"])
    assert {"psnr", "codebook_usage"} <= set(results["tokenizer"]["reconstruct"])
    assert "## Drawings from prompts (text to image)" in text and "![drawings](drawings.png)" in text
    for run in ("pretrain", "vqa", "vqa_10pct", "caption", "av", "tokenizer", "draw"):
        losses = [json.loads(line)["loss"] for line in (out / run / "metrics.jsonl").read_text().splitlines()
                  if "loss" in json.loads(line)]
        assert losses[-1] < losses[0]
