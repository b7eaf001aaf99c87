"""Polymodal: build, pre-train, fine-tune, evaluate and serve multimodal transformers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__version__ = "0.1.0"


def load(path: str | Path, device: str = "auto") -> Any:
    """Load a trained model (run folder or model folder) onto `device` (`auto`: a GPU when there is one,
    `cpu`, `cuda`, `cuda:N`); see `polymodal.api.LoadedModel`."""
    from .api import load as _load

    return _load(path, device)


def build(config: Any, records: list[dict[str, Any]] | None = None) -> Any:
    """Build the `System` (model, processors, vocabularies) a config (path or `Config`) describes."""
    from .builders import build_system
    from .config import Config, load_config

    return build_system(config if isinstance(config, Config) else load_config(config), records)


def train(config: Any, out: str | Path, *, overrides: list[str] | None = None, resume: bool = False) -> Path:
    """Train a config (path or `Config`) into the run folder `out`; returns the model folder."""
    from .config import Config, load_config
    from .training.trainer import train as _train

    cfg = config if isinstance(config, Config) else load_config(config, overrides)
    return _train(cfg, out, resume=resume)
