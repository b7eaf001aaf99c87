"""Runs of shipped recipes, trained a few steps on the tiny data, and the server over them."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import socket
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from PIL import Image

from polymodal.api import load
from polymodal.config import load_config
from polymodal.data.shapes_generation import synthesize_generation
from polymodal.serving import ServedModel, ServeSettings, create_app
from polymodal.training.trainer import train

CONFIGS = Path(__file__).parents[2] / "src" / "polymodal" / "configs"


def train_shipped(config: str, data: Path, out: Path, prefix: str = "", steps: int = 3, extra: tuple = ()) -> Path:
    """A shipped recipe trained `steps` steps on `data`'s `{prefix}{split}.jsonl`: its run folder."""
    sets = [f"data.{s}={data / f'{prefix}{s}.jsonl'}" for s in ("train", "val", "test")]
    train(load_config(CONFIGS / config, [*sets, f"train.max_steps={steps}", "train.batch_size=8", "train.val_every=0",
                                         "data.num_workers=0", *extra]), out, log=lambda _: None)
    return out


@pytest.fixture(scope="session")
def generation_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prompted-images")
    synthesize_generation(out, n_train=24, n_val=8, n_test=8, n_heldout=0, log=lambda _: None)
    return out


@pytest.fixture(scope="session")
def serve_runs(tmp_path_factory, shapes_data, generation_data, tokenizer_run, sound_data, audio_tokenizer_run) -> dict:
    """Run folders of the shipped recipes the server's endpoints need: name → run."""
    root = tmp_path_factory.mktemp("serve-runs")
    return {
        "caption": train_shipped("caption-image.yaml", shapes_data, root / "caption"),
        "clip": train_shipped("shapes-clip.yaml", shapes_data, root / "clip"),
        "vqa": train_shipped("shapes-vqa.yaml", shapes_data, root / "vqa"),
        "classes": train_shipped("image-classification.yaml", shapes_data, root / "classes"),
        "draw": train_shipped("text-to-image.yaml", generation_data, root / "draw", steps=2,
                              extra=(f"model.encoders.image.path={tokenizer_run}", "tasks.draw.samples=1")),
        "sound": train_shipped("text-to-audio.yaml", sound_data, root / "sound", prefix="sound-", steps=2,
                               extra=(f"model.encoders.audio.path={audio_tokenizer_run}",)),
    }


@pytest.fixture(scope="session")
def served(serve_runs) -> dict:
    """The runs loaded once: name → ServedModel."""
    return {name: ServedModel(name, load(run, device="cpu")) for name, run in serve_runs.items()}


def make_app(served: dict, names: tuple[str, ...] | None = None, **settings):
    models = [m for n, m in served.items() if names is None or n in names]
    return create_app(models, ServeSettings(**settings))


def png_uri(path: str | Path | None = None, size: tuple[int, int] = (32, 32)) -> str:
    """A PNG data URI: the file at `path`, or a plain image of `size`."""
    data = Path(path).read_bytes() if path else _png(Image.new("RGB", size, (200, 30, 30)))
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def first_record(data: Path, split: str = "test") -> dict:
    record = json.loads((data / f"{split}.jsonl").read_text().splitlines()[0])
    return {k: str(data / v) if k in ("image", "video", "audio") else v for k, v in record.items()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(app) -> str:
    """`app` served by uvicorn on a free local port in a thread: its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
