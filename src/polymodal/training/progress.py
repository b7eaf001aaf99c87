"""A live progress line (loss, samples/s, ETA): a rich bar on a terminal, periodic lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Callable

from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress


class Progress:
    """Progress over optimiser steps.

    Args:
        total: the last step.
        start: the step training starts from (non-zero when resumed).
        enabled: show anything at all (only the main process does).
        log: where plain lines go when stdout is not a terminal.
    """

    def __init__(self, total: int, start: int, *, enabled: bool, log: Callable[[str], None]):
        self.total, self.start, self.enabled, self.log = total, start, enabled, log
        self.every = max(1, (total - start) // 10)
        self.t0 = time.perf_counter()
        self.bar = None
        if enabled and sys.stdout.isatty():
            self.bar = RichProgress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                    TextColumn("loss {task.fields[loss]:.4f}  {task.fields[rate]:.0f} samples/s"),
                                    TextColumn("ETA"), TimeRemainingColumn())
            self.task = self.bar.add_task("train", total=total, completed=start, loss=float("nan"), rate=0.0)

    def __enter__(self) -> "Progress":
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def update(self, step: int, loss: float, rate: float) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(self.task, completed=step, loss=loss, rate=rate)
        elif (step - self.start) % self.every == 0 or step == self.total:
            done = step - self.start
            eta = (time.perf_counter() - self.t0) / max(done, 1) * (self.total - step)
            self.log(f"step {step}/{self.total}  loss {loss:.4f}  {rate:.0f} samples/s  ETA {eta:.0f}s")
