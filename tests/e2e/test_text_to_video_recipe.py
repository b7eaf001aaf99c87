"""The two-stage text-to-video recipe on a small set of prompted clips: a video tokenizer run (per-frame image
codes; its loss falls, PSNR reported), then a language model that writes a clip's codes frame after frame;
the run reloads and makes the same clips, `predict --save` writes MP4 files, and evaluation reports the
clip judge's scores (object and direction from the shapes detector on every frame) beside its baselines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from polymodal.api import load
from polymodal.cli import main
from polymodal.config import load_config
from polymodal.data.manifest import read_manifest
from polymodal.data.media import decode_video
from polymodal.data.video_generation import NUM_FRAMES, synthesize_video_generation
from polymodal.errors import ConfigError, PolymodalError
from polymodal.training.trainer import train
from tests.conftest import logged_losses

CONFIGS = Path(__file__).parents[2] / "src" / "polymodal" / "configs"


def _sets(data: Path) -> list[str]:
    return [*(f"data.{s}={data / f'clip-{s}.jsonl'}" for s in ("train", "val", "test")), "data.num_workers=0",
            "train.val_every=0"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    data = tmp_path_factory.mktemp("clips")
    synthesize_video_generation(data, n_train=80, n_val=4, n_test=6, n_heldout=0, log=lambda _: None)
    root = tmp_path_factory.mktemp("runs")
    train(load_config(CONFIGS / "tokenizer-video.yaml", [*_sets(data), "train.max_steps=40", "train.batch_size=4",
                                                         "train.log_every=10"]),
          root / "tokenizer", log=lambda _: None)
    sets = [*_sets(data), f"model.encoders.video.path={root / 'tokenizer'}", "model.decoder.width=32",
            "model.decoder.depth=1", "model.decoder.num_heads=2", "train.max_steps=40", "train.batch_size=8",
            "train.log_every=10", "tasks.clip.samples=1", "train.lr=2e-3"]
    train(load_config(CONFIGS / "text-to-video.yaml", sets), root / "clip", log=lambda _: None)
    return root, data


def test_the_tokenizer_codes_every_frame_and_both_stages_learn(runs):
    root, data = runs
    assert logged_losses(root / "tokenizer")[-1] < 0.7 * logged_losses(root / "tokenizer")[0]
    clip = logged_losses(root / "clip")
    assert clip[-1] < clip[0] - 0.5  # from about ln(V) ≈ 7: falling towards the codes' entropy
    model = load(root / "tokenizer")
    paths = [r["video"] for r in read_manifest(data / "clip-test.jsonl")[:2]]
    codes = model.encode_tokens(video=paths)
    assert codes.shape == (2, NUM_FRAMES * 64) and torch.equal(model.encode_tokens(video=paths[1]), codes[1])
    clips = model.decode_tokens(codes)
    assert len(clips) == 2 and clips[0].shape == (NUM_FRAMES, 64, 64, 3) and clips[0].dtype == np.uint8
    with pytest.raises(PolymodalError, match=r"expected 256 codes per clip"):
        model.decode_tokens([1, 2, 3])
    metrics = model.evaluate(read_manifest(data / "clip-test.jsonl"))["reconstruct"]
    assert metrics["psnr"] > 15 and metrics["codebook_usage"] > 0


def test_a_reloaded_run_makes_the_same_clips_and_evaluation_reports_the_baselines(runs, tmp_path):
    root, data = runs
    model = load(root / "clip")
    clips = model.generate_video(["a small red circle moving left", "a large blue square moving up"], n=2, seed=3)
    again = load(root / "clip").generate_video(["a small red circle moving left", "a large blue square moving up"],
                                               n=2, seed=3)
    assert clips.shape == (2, 2, NUM_FRAMES, 64, 64, 3) and clips.dtype == np.uint8 and np.array_equal(clips, again)
    assert model.generate_video("a small red circle moving left", n=1, seed=3).shape == (1, NUM_FRAMES, 64, 64, 3)
    metrics = model.evaluate(read_manifest(data / "clip-test.jsonl"))["clip"]
    for key in ("judge", "judge/object", "judge/direction", "judge_unguided", "judge_random", "judge_ceiling",
                "judge_retrieval"):
        assert key in metrics
    assert main(["predict", str(root / "clip"), "--prompt", "a small green circle moving down", "--save",
                 str(tmp_path / "x.mp4")]) == 0
    frames, _ = decode_video(tmp_path / "x.mp4")
    one = model.generate_video("a small green circle moving down", n=1, seed=0)[0]
    assert np.array_equal(frames, one)  # written without loss, as made
    assert main(["eval", str(root / "clip"), "--data", str(data / "clip-test.jsonl"), "--drawings",
                 str(tmp_path / "strips.png")]) == 0
    assert (tmp_path / "strips.png").stat().st_size > 5_000
    with pytest.raises(PolymodalError, match="this model has no text_to_audio task"):
        model.generate_audio("a bell")
    assert torch.equal(torch.as_tensor(one), torch.as_tensor(model.generate_video("a small green circle moving down")[0]))


def test_an_image_tokenizers_run_codes_each_frame_as_a_video_tokenizer(tokenizer_run, clip_data, tmp_path):
    """`model.encoders.video: {type: tokenizer, path: IMAGE_RUN}`: a clip's codes are its frames' image codes
    in order (the image tokenizer's own, the oracle), and the clips made decode frame by frame through its
    pixel decoder; the run saves the image tokenizer and reloads the same."""
    sets = [*_sets(clip_data), f"model.encoders.video.path={tokenizer_run}", "model.encoders.video.num_frames=4",
            "model.decoder.width=32", "model.decoder.depth=1", "model.decoder.num_heads=2", "train.max_steps=2",
            "train.batch_size=4", "tasks.clip.samples=1"]
    train(load_config(CONFIGS / "text-to-video.yaml", sets), tmp_path / "clip", log=lambda _: None)
    model, image = load(tmp_path / "clip"), load(tokenizer_run)
    path = clip_data / read_manifest(clip_data / "clip-test.jsonl")[0]["video"]
    frames, _ = decode_video(path)
    codes = model._encode(fuse=False, video=[path]).modalities["video"].codes[0].cpu()
    assert torch.equal(codes, image.encode_tokens([Image.fromarray(f) for f in frames]).flatten())
    clip = model.generate_video("a small red circle moving left", n=1, seed=0)[0]
    head = model.system.model.tasks["clip"]
    drawn = head.draw([head.data.prompt_ids("a small red circle moving left")], seed=0)[0]
    per_frame = np.stack([np.asarray(im) for im in image.decode_tokens(drawn.reshape(NUM_FRAMES, 64))])
    assert clip.shape == (NUM_FRAMES, 64, 64, 3) and np.array_equal(clip, per_frame)
    again = load(tmp_path / "clip").generate_video("a small red circle moving left", n=1, seed=0)[0]
    assert np.array_equal(again, clip)


def test_a_video_tokenizer_path_names_what_it_needs(tokenizer_run, video_tokenizer_run, audio_tokenizer_run,
                                                   clip_data, tmp_path):
    base = [*_sets(clip_data), "train.max_steps=1", "model.decoder.width=32", "model.decoder.depth=1",
            "model.decoder.num_heads=2"]
    for path, options, message in (
            (video_tokenizer_run, ["model.encoders.video.num_frames=8"], "codes clips of 4 frames, got 8"),
            (audio_tokenizer_run, [], "is not a video tokenizer \\(or, for video, an image tokenizer's run"),
            (tokenizer_run, ["model.encoders.video.fps=4"], "video.fps: a trained tokenizer .* give only num_frames")):
        with pytest.raises(ConfigError, match=message):
            train(load_config(CONFIGS / "text-to-video.yaml", [*base, f"model.encoders.video.path={path}", *options]),
                  tmp_path / "x", log=lambda _: None)
