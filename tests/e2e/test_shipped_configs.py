"""Every config under configs/ runs as shipped: it loads, builds on matching data and trains a few steps."""

from pathlib import Path

import pytest
import torch

from polymodal.api import load
from polymodal.config import load_config
from polymodal.data.manifest import read_manifest
from polymodal.data.shapes_av import synthesize_av
from polymodal.models.tiny_lm import save_tiny_lm
from polymodal.training.trainer import train
from tests.conftest import generation_prefix, own_task_data, stage_one

CONFIGS = sorted((Path(__file__).parents[2] / "src" / "polymodal" / "configs").glob("*.yaml"))


@pytest.fixture(scope="module")
def av_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("av")
    synthesize_av(out, n_train=40, n_val=8, n_test=8, log=lambda _: None)
    return out / "av"


def test_every_config_is_covered():
    assert {c.name for c in CONFIGS} >= {"shapes-clip.yaml", "shapes-vqa.yaml", "shapes-av.yaml",
                                         "image-classification.yaml", "audio-classification.yaml",
                                         "caption-image.yaml", "llava-tiny.yaml"}


def expected_metrics(task_type, task, records):
    if task_type in ("vqa", "vqa_generative"):
        return {"accuracy"} | {f"accuracy/{r['question_type']}" for r in records if "question_type" in r}
    if task_type == "contrastive":
        a, b = task.data.first, task.data.second
        return {f"{x}_to_{y}/R@{k}" for x, y in ((a, b), (b, a)) for k in (1, 5, 10)} | {"mean_recall"}
    if task_type == "caption":
        return {"bleu4", "cider", "exact_match"}
    if task_type == "transcription":
        return {"wer", "bleu4", "cider", "exact_match"}
    if task_type == "ctc":
        return {"wer", "cer", "exact_match"}
    if task_type == "distill":
        return {"cosine", "teacher_top1"}
    if task_type == "itm":
        return {"accuracy", "auc"}
    if task_type == "mlm":
        return {"masked_accuracy"}
    if task_type == "masked_modelling":
        return {"masked_mse"}
    if task_type == "text_to_image":  # GenEval-style scores need prompts with a spec (synth --generation)
        return set()
    if task_type == "text_to_audio":  # the prompted sounds carry a spec: the sound judge scores them
        return {"judge", "judge/voice", "judge/pitch", "judge/count", "judge_unguided", "judge_random",
                "judge_ceiling", "judge_retrieval"}
    if task_type == "text_to_video":  # so do the prompted clips: the shapes detector on every frame
        return {"judge", "judge/object", "judge/direction", "judge_unguided", "judge_random", "judge_ceiling",
                "judge_retrieval"}
    if task_type == "reconstruction":
        return {"psnr", "ssim", "codebook_usage", "perplexity"}
    return {"accuracy"}


@pytest.mark.parametrize("config_path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_trains_and_evaluates(config_path, shapes_data, av_data, sound_data, clip_data, tokenizer_run,
                                             audio_tokenizer_run, tmp_path, request):
    data = av_data if config_path.name.startswith(("shapes-av", "shapes-video", "audio-", "caption-video",
                                                   "caption-audio")) else shapes_data
    if config_path.name.startswith("transcribe-speech"):  # spoken digits (skips without espeak-ng)
        data = request.getfixturevalue("speech_data")
    prefix = generation_prefix(config_path)
    data = {"sound-": sound_data, "clip-": clip_data}.get(prefix, data)
    overrides = [f"data.train={data / f'{prefix}train.jsonl'}", f"data.val={data / f'{prefix}val.jsonl'}",
                 f"data.test={data / f'{prefix}test.jsonl'}", "train.max_steps=2", "train.batch_size=8",
                 "train.warmup_steps=1", "train.val_every=0"]
    if load_config(config_path).model.get("decoder", {}).get("type") == "hf":  # the user's LM folder: a tiny one
        texts = [r["text"] for r in read_manifest(data / "train.jsonl")]
        overrides.append(f"model.decoder.path={save_tiny_lm(tmp_path / 'lm', 'gpt2', texts)}")
    overrides += own_task_data(config_path, data, prefix)  # a task's own manifests: the same tiny ones
    # what a generation model reads; text to video reads the image tokenizer frame by frame, as shipped
    overrides += stage_one(config_path, {"image": tokenizer_run, "audio": audio_tokenizer_run,
                                         "video": tokenizer_run})
    if load_config(config_path).train.init_from:  # stage 2 of a recipe: its stage 1 is trained elsewhere
        overrides.append("train.init_from=null")
    config = load_config(config_path, overrides)
    run = tmp_path / "run"
    train(config, run)
    model = load(run)
    records = read_manifest(data / f"{prefix}test.jsonl")
    results = model.evaluate(records)
    assert set(results) == set(config.tasks)
    for name, metrics in results.items():  # each task reports its standard metrics over the records it can use
        task = model.system.model.tasks[name]
        usable = [r for r in records if all(f in r for f in task.data.fields)]
        assert metrics["n"] == len(usable) > 0
        assert set(metrics) - {"n"} == expected_metrics(config.tasks[name]["type"], task, usable), name
    if any(t["type"] == "contrastive" for t in config.tasks.values()):  # the shared space, from the API
        given = {m: [r[m] for r in records[:3]] for m in ("image", "video", "audio", "text")
                 if m in config.model["encoders"]}
        embeddings = model.embed(**{f"{m}s": v for m, v in given.items()})
        assert set(embeddings) == set(given)
        for e in embeddings.values():
            assert e.shape[0] == 3 and torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-5)
