"""Every supported media format, from a file the test writes to a loss with gradients:
decode → preprocess → encode → task loss → backward, through the same builder and loader code as training."""

import numpy as np
import pytest
import torch

from polymodal.builders import build_system
from polymodal.config import from_dict
from polymodal.data.loader import TaskDataset
from polymodal.data.media import write_audio, write_video

RATE = 16000
AUDIO = {"type": "conv", "channels": [8], "n_mels": 16, "hop_length": 320, "sample_rate": RATE, "duration": 1.0}
VIDEO = {"type": "frames", "image_size": 32, "num_frames": 4, "num_heads": 2, "frame": {"type": "cnn", "channels": [8]}}


def _clip(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """16 frames of a square moving right (or left), and a 1 s tone (440 or 880 Hz)."""
    video = np.full((16, 32, 32, 3), 96, dtype=np.uint8)
    for t in range(16):
        x = t + 4 if seed % 2 else 24 - t
        video[t, 12:20, x:x + 8] = 255
    tone = 0.5 * np.sin(2 * np.pi * (440 if seed % 2 else 880) * np.arange(RATE) / RATE)
    return video, tone.astype(np.float32)


def _loss_and_grads(tmp_path, encoders: dict, inputs: dict, records: list[dict]) -> None:
    config = from_dict({
        "model": {"type": "joint_transformer", "width": 32, "depth": 1, "num_heads": 2, "encoders": encoders},
        "tasks": {"t": {"type": "classification", "hidden": 0, "inputs": inputs}},
        "data": {}, "train": {},
    }, tmp_path)
    torch.manual_seed(0)
    system = build_system(config, records)
    task = system.model.tasks["t"]
    dataset = TaskDataset(records, task.data, system.processors)
    batch = dataset.collate([dataset[(0, i)] for i in range(len(records))])  # training items: augmentation on
    loss = system.model({"t": batch})["t"]["loss"]
    assert torch.isfinite(loss)
    loss.backward()
    for name, p in system.model.named_parameters():
        if name.startswith("backbone.absent."):  # placeholders learn only from examples that lack a modality
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("suffix", [".mp4", ".m4v", ".webm", ".mkv", ".gif"])
def test_video_file_to_loss(tmp_path, suffix):
    records = []
    for i in range(4):
        video, tone = _clip(i)
        path = write_video(tmp_path / f"c{i}{suffix}", video, fps=8, audio=None if suffix == ".gif" else tone,
                           sample_rate=RATE)
        records.append({"id": str(i), "video": str(path), "label": "right" if i % 2 else "left"})
    _loss_and_grads(tmp_path, {"video": VIDEO}, {"video": "video"}, records)


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".mp3", ".ogg", ".m4a", ".mp4"])
def test_audio_file_to_loss(tmp_path, suffix):
    """`.mp4`: the sound track of a video file."""
    records = []
    for i in range(4):
        video, tone = _clip(i)
        path = (write_video(tmp_path / f"c{i}.mp4", video, fps=8, audio=tone, sample_rate=RATE) if suffix == ".mp4"
                else write_audio(tmp_path / f"c{i}{suffix}", tone, RATE))
        records.append({"id": str(i), "audio": str(path), "label": "low" if i % 2 else "high"})
    _loss_and_grads(tmp_path, {"audio": AUDIO}, {"audio": "audio"}, records)
