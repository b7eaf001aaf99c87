"""One evaluation harness for every task: predict over a manifest's records, then score."""

from __future__ import annotations

from typing import Any

import torch

from ..system import System
from ..data.loader import TaskDataset, eval_loader, to_device


def task_records(system: System, task_name: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records `task_name` can use: its required fields and at least one of its inputs."""
    task = system.model.tasks[task_name]
    return [r for r in records if task.data.usable(r)]


def without(records: list[dict[str, Any]], task, modalities: tuple[str, ...]) -> list[dict[str, Any]]:
    """The records with the fields that feed `modalities` into `task` removed."""
    fields = {task.data.inputs[m] for m in modalities if m in task.data.inputs}
    return [{k: v for k, v in r.items() if k not in fields} for r in records] if fields else records


@torch.no_grad()
def predict(system: System, task_name: str, records: list[dict[str, Any]], batch_size: int = 256,
            device: torch.device | str = "cpu") -> list[Any]:
    """One prediction per record (records must carry the task's fields), on the CPU whatever `device` the
    model runs on: metrics and callers get Python values and CPU tensors."""
    model = system.model
    task = model.tasks[task_name]
    was_training = model.training
    model.eval()
    predictions: list[Any] = []
    for batch in eval_loader(TaskDataset(records, task.data, system.processors), batch_size):
        predictions.extend(to_device(p, "cpu") for p in task.predict_batch(model, to_device(batch["inputs"], device),
                                                                           to_device(batch["target"], device)))
    model.train(was_training)
    return predictions


def evaluate(system: System, records: list[dict[str, Any]] | dict[str, list[dict[str, Any]]], batch_size: int = 256,
             device: torch.device | str = "cpu", drop: tuple[str, ...] = (),
             tasks: tuple[str, ...] | None = None) -> dict[str, dict[str, float]]:
    """{task name: {metric: value}} over the records each task can use; tasks with none are left out.

    `records`: one manifest's records for every task, or task name → its own records (a task missing
    from the mapping is left out).
    `drop`: modalities removed from every record first (a task that cannot do without one is left out).
    `tasks`: evaluate only these (default: every task).
    """
    results = {}
    for name, task in system.model.tasks.items():
        if tasks is not None and name not in tasks:
            continue
        own = records.get(name, []) if isinstance(records, dict) else records
        usable = task_records(system, name, without(own, task, drop))
        if not usable:
            continue
        metrics = task.data.metrics(predict(system, name, usable, batch_size, device), usable)
        results[name] = {**metrics, "n": float(len(usable))}
    return results
