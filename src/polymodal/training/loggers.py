"""Where training's figures go besides `metrics.jsonl` (`train.loggers`): TensorBoard and Weights & Biases.

Each logger receives what `metrics.jsonl` receives, a record per logging step (losses, learning rate,
samples/s, tokens/s, data-wait share, MFU, task weights) and per validation (`val/TASK/METRIC`), and the
resolved config once. Only the main process logs.

- `tensorboard`: event files in `RUN/tensorboard/` (`tensorboard --logdir RUN/tensorboard`).
- `wandb`: a Weights & Biases run named after the run folder, its files in `RUN/wandb/`; `train.wandb`
  holds `wandb.init`'s arguments (`project`, `entity`, `tags`, ...). Without a key (`WANDB_API_KEY` or
  `wandb login`) it runs offline, to sync later with `wandb sync RUN/wandb/offline-run-*`; a resumed
  run continues the same W&B run.
"""

from __future__ import annotations

import importlib
import netrc
import os
import uuid
from pathlib import Path
from typing import Any, Protocol

import yaml

from ..config import LOGGERS
from ..errors import ConfigError

WANDB_ID = "wandb-id"  # in the run folder: the W&B run a resumed run continues


class Logger(Protocol):
    def log(self, step: int, figures: dict[str, float]) -> None: ...

    def close(self) -> None: ...


def flatten(record: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """A `metrics.jsonl` record as `name → number`, nested names joined by `/` (`val/vqa/accuracy`); the
    step and anything not a number are left out."""
    flat: dict[str, float] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and name != "step":
            flat[name] = float(value)
    return flat


def _require(module: str, logger: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"train.loggers: {logger!r} needs the {logger} package, which is not installed "
                          f"(pip install 'polymodal[loggers]')") from None


class TensorBoardLogger:
    def __init__(self, out: Path, config: dict[str, Any]):
        _require("tensorboard", "tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(out / "tensorboard"))
        self.writer.add_text("config", "```yaml\n" + yaml.safe_dump(config, sort_keys=False) + "\n```")

    def log(self, step: int, figures: dict[str, float]) -> None:
        for name, value in figures.items():
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    def __init__(self, out: Path, config: dict[str, Any], settings: dict[str, Any]):
        wandb = _require("wandb", "wandb")
        id_file = out / WANDB_ID
        run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:12]
        id_file.write_text(run_id)
        arguments = {"project": "polymodal", "name": out.resolve().name, **settings}
        mode = os.environ.get("WANDB_MODE") or ("online" if _has_wandb_key() else "offline")
        self.run = wandb.init(dir=str(out), id=run_id, resume="allow", config=config, mode=mode, **arguments)

    def log(self, step: int, figures: dict[str, float]) -> None:
        self.run.log(figures, step=step)

    def close(self) -> None:
        self.run.finish()


def _has_wandb_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def make_loggers(names: list[str], out: Path, config: dict[str, Any],
                 wandb_settings: dict[str, Any] | None = None) -> list[Logger]:
    """The loggers `train.loggers` names, writing under the run folder `out`."""
    makers = {"tensorboard": lambda: TensorBoardLogger(out, config),
              "wandb": lambda: WandbLogger(out, config, wandb_settings or {})}
    return [makers[name]() for name in dict.fromkeys(names)]  # names are checked with the config (LOGGERS)
