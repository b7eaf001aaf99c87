"""A live progress line (loss, samples/s, tokens/s, data wait, MFU, ETA): a rich bar on a terminal,
periodic lines otherwise."""

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
        self.next_line = start + self.every
        self.t0 = time.perf_counter()
        self.bar = None
        if enabled and sys.stdout.isatty():
            self.bar = RichProgress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                    TextColumn("loss {task.fields[loss]:.4f}  {task.fields[speed]}"),
                                    TextColumn("ETA"), TimeRemainingColumn())
            self.task = self.bar.add_task("train", total=total, completed=start, loss=float("nan"), speed="")

    def __enter__(self) -> "Progress":
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def update(self, step: int, figures: dict[str, float] | None = None) -> None:
        """Step `step` done; `figures` (loss, samples/s, data-wait share) at the steps that measured them:
        a plain line goes out at the first of those past each tenth of the run, and at the end."""
        if not self.enabled:
            return
        if self.bar is not None:
            fields = {} if figures is None else {"loss": figures["loss"], "speed": speed_text(figures)}
            self.bar.update(self.task, completed=step, **fields)
        elif figures is not None and (step >= self.next_line or step == self.total):
            self.next_line = step + self.every - (step - self.start) % self.every
            done = step - self.start
            eta = (time.perf_counter() - self.t0) / max(done, 1) * (self.total - step)
            self.log(f"step {step}/{self.total}  loss {figures['loss']:.4f}  {speed_text(figures)}  ETA {eta:.0f}s")


def speed_text(figures: dict[str, float]) -> str:
    """`221 samples/s  6.3k tokens/s  data wait 2%  MFU 31%`: the figures a log step measured."""
    parts = [f"{figures['samples_per_s']:.0f} samples/s"]
    if "tokens_per_s" in figures:
        tokens = figures["tokens_per_s"]
        parts.append(f"{tokens / 1000:.1f}k tokens/s" if tokens >= 1000 else f"{tokens:.0f} tokens/s")
    parts.append(f"data wait {figures['data_wait']:.0%}")
    if "mfu" in figures:
        parts.append(f"MFU {figures['mfu']:.1%}")
    return "  ".join(parts)
