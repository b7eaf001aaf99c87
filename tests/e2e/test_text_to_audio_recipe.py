"""The two-stage text-to-sound recipe on a small set of prompted sounds: a sound tokenizer run (its loss falls,
PSNR and codebook usage reported), then a language model that writes its codes; the frozen tokenizer stays
as trained, the run reloads and makes the same sounds, `predict --save` writes WAV files, and evaluation
reports the sound judge's scores beside its baselines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from polymodal.api import load
from polymodal.cli import main
from polymodal.config import load_config
from polymodal.data.manifest import read_manifest
from polymodal.data.media import read_audio
from polymodal.data.sound_generation import NUM_SAMPLES, synthesize_sound_generation
from polymodal.errors import ConfigError, PolymodalError
from polymodal.training.trainer import train
from tests.conftest import logged_losses

CONFIGS = Path(__file__).parents[2] / "src" / "polymodal" / "configs"


def _sets(data: Path) -> list[str]:
    return [*(f"data.{s}={data / f'sound-{s}.jsonl'}" for s in ("train", "val", "test")), "data.num_workers=0",
            "train.val_every=0"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    data = tmp_path_factory.mktemp("sounds")
    synthesize_sound_generation(data, n_train=160, n_val=8, n_test=12, n_heldout=0, log=lambda _: None)
    root = tmp_path_factory.mktemp("runs")
    train(load_config(CONFIGS / "tokenizer-audio.yaml", [*_sets(data), "train.max_steps=60", "train.batch_size=16",
                                                         "train.log_every=10", "model.encoders.audio.channels=[32,32,64]"]),
          root / "tokenizer", log=lambda _: None)
    sets = [*_sets(data), f"model.encoders.audio.path={root / 'tokenizer'}", "model.decoder.width=64",
            "model.decoder.depth=2", "model.decoder.num_heads=4", "train.max_steps=100", "train.batch_size=16",
            "train.log_every=10", "tasks.sound.samples=2"]
    train(load_config(CONFIGS / "text-to-audio.yaml", sets), root / "sound", log=lambda _: None)
    return root, data


def test_the_tokenizer_learns_to_rebuild_the_log_mel_and_reports_its_scores(runs):
    root, data = runs
    losses = logged_losses(root / "tokenizer")
    assert losses[-1] < 0.6 * losses[0]
    metrics = load(root / "tokenizer").evaluate(read_manifest(data / "sound-test.jsonl"))["reconstruct"]
    assert metrics["psnr"] > 15  # an untrained decoder's flat output: about 12 dB
    assert {"ssim", "codebook_usage", "perplexity"} <= set(metrics)


def test_codes_go_both_ways_through_the_api(runs):
    root, data = runs
    model = load(root / "tokenizer")
    paths = [r["audio"] for r in read_manifest(data / "sound-test.jsonl")[:3]]
    codes = model.encode_tokens(audio=paths)
    assert codes.shape == (3, 16) and codes.dtype == torch.long and int(codes.max()) < 1000
    assert torch.equal(model.encode_tokens(audio=paths[2]), codes[2])  # one sound: (N,)
    waves = model.decode_tokens(codes)
    assert len(waves) == 3 and waves[0].shape == (NUM_SAMPLES,) and np.abs(waves[0]).max() <= 1
    np.testing.assert_allclose(model.decode_tokens(codes[1]), waves[1], atol=1e-4)  # its codes alone, whatever the batch
    with pytest.raises(PolymodalError, match="this is an audio tokenizer: give audio="):
        model.encode_tokens(paths)
    with pytest.raises(PolymodalError, match=r"expected 16 codes per sound"):
        model.decode_tokens([1, 2, 3])


def test_the_language_model_learns_the_codes_and_leaves_the_tokenizer_as_trained(runs):
    root, _ = runs
    losses = logged_losses(root / "sound")
    assert losses[-1] < losses[0] - 1.5  # from about ln(V) ≈ 7 towards the codes' entropy
    tokenizer = load_file(root / "tokenizer" / "model" / "model.safetensors")
    maker = load_file(root / "sound" / "model" / "model.safetensors")
    prefix = "backbone.encoders.audio."
    kept = {k: v for k, v in tokenizer.items() if k.startswith(prefix)}
    assert kept and all(torch.equal(maker[k], v) for k, v in kept.items())
    decoder = {k[len("tasks.reconstruct.decoder."):]: v for k, v in tokenizer.items()
               if k.startswith("tasks.reconstruct.decoder.")}
    assert decoder and all(torch.equal(maker[prefix + "pixel_decoder." + k], v) for k, v in decoder.items())


def test_a_reloaded_run_makes_the_same_sounds_and_evaluation_reports_the_baselines(runs, tmp_path, capsys):
    root, data = runs
    model = load(root / "sound")
    waves, rate = model.generate_audio(["two high whistles", "a low horn"], n=2, seed=5)
    again, _ = load(root / "sound").generate_audio(["two high whistles", "a low horn"], n=2, seed=5)
    assert rate == 16000 and waves.shape == (2, 2, NUM_SAMPLES) and np.array_equal(waves, again)
    assert np.abs(waves).max() <= 1 and np.abs(waves).max() > 0
    one, _ = model.generate_audio("a low horn", n=1, seed=5)
    assert one.shape == (1, NUM_SAMPLES)
    metrics = model.evaluate(read_manifest(data / "sound-test.jsonl"))["sound"]
    for key in ("judge", "judge/voice", "judge/pitch", "judge/count", "judge_unguided", "judge_random",
                "judge_ceiling", "judge_retrieval"):
        assert key in metrics
    assert metrics["judge_retrieval"] == 1.0  # a real training sound of the very prompt (all are seen)
    assert main(["predict", str(root / "sound"), "--prompt", "three low chirps", "--save", str(tmp_path / "x.wav"),
                 "-n", "2"]) == 0
    written = read_audio(tmp_path / "x-1.wav", sample_rate=16000)[0]
    assert len(written) == NUM_SAMPLES and np.abs(written).max() > 0
    assert main(["eval", str(root / "sound"), "--data", str(data / "sound-test.jsonl"), "--drawings",
                 str(tmp_path / "grid.png")]) == 0
    rows = len({r["text"] for r in read_manifest(data / "sound-test.jsonl")[:40]})
    assert (tmp_path / "grid.png").stat().st_size > 10_000 and len(list(tmp_path.glob("grid-*.wav"))) == 2 * min(rows, 8)
    assert main(["predict", str(root / "sound"), "--prompt", "a bell", "--save", str(tmp_path / "x.png")]) != 0
    assert "x.png: expected a file name for sounds (.wav" in capsys.readouterr().err
    with pytest.raises(PolymodalError, match="this model has no text_to_image task"):
        model.generate_image("a circle")


def test_text_to_audio_without_a_sound_tokenizer_is_a_clear_error(runs, tmp_path):
    root, data = runs
    with pytest.raises(ConfigError, match=r"model.encoders.audio.path: no trained tokenizer there"):
        train(load_config(CONFIGS / "text-to-audio.yaml", [*_sets(data), f"model.encoders.audio.path={tmp_path}"]),
              tmp_path / "x", log=lambda _: None)
    sets = [*_sets(data), "model.encoders.audio={type: conv}"]
    with pytest.raises(ConfigError, match=r"drawing audio needs .* model.encoders.audio: \{type: tokenizer"):
        train(load_config(CONFIGS / "text-to-audio.yaml", sets), tmp_path / "y", log=lambda _: None)
