"""Best-checkpoint selection and early stopping (`train.select`, `train.early_stop`).

Each validation gives {task: {metric: value}}; `train.select.metric` names one of them as `TASK/METRIC`.
When it improves on the best so far (strictly), the trainer saves the model as the best; after `patience`
validations in a row without improvement, training stops. The tracker's state goes into every checkpoint,
so a resumed run keeps the best so far.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..errors import ConfigError


@dataclass
class BestTracker:
    """The best validation so far of one metric.

    Args:
        metric: `TASK/METRIC`, e.g. `vqa/accuracy`.
        mode: `max` (higher is better) or `min`.
        patience: validations without improvement before stopping (None: never stop early).
    """

    metric: str
    mode: str = "max"
    patience: int | None = None
    best: float | None = None
    best_step: int | None = None
    bad: int = 0  # validations since the last improvement

    def value(self, results: dict[str, dict[str, float]]) -> float:
        task, name = self.metric.split("/", 1)
        if name not in results.get(task, {}):
            available = [f"{t}/{m}" for t, metrics in results.items() for m in metrics if m != "n"]
            raise ConfigError(f"train.select.metric: validation gives no {self.metric!r}; it gives: "
                              f"{', '.join(available) or '(nothing: no validation records)'}")
        return float(results[task][name])

    def update(self, step: int, results: dict[str, dict[str, float]]) -> bool:
        """Record a validation at `step`; True when it is the new best."""
        value = self.value(results)
        better = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
        if better:
            self.best, self.best_step, self.bad = value, step, 0
        else:
            self.bad += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k in ("best", "best_step", "bad")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_step, self.bad = state["best"], state["best_step"], state["bad"]
