"""One evaluation harness for every task: predict over a manifest's records, then score."""

from __future__ import annotations

from typing import Any

import torch

from ..build import System
from ..data.loader import TaskDataset, eval_loader


def task_records(system: System, task_name: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records that carry every field `task_name` needs."""
    fields = system.model.tasks[task_name].fields
    return [r for r in records if all(f in r for f in fields)]


@torch.no_grad()
def predict(system: System, task_name: str, records: list[dict[str, Any]], batch_size: int = 256,
            device: torch.device | str = "cpu") -> list[Any]:
    """One prediction per record (records must carry the task's fields)."""
    model = system.model
    task = model.tasks[task_name]
    was_training = model.training
    model.eval()
    predictions: list[Any] = []
    for batch in eval_loader(TaskDataset(records, task, system.processors), batch_size):
        inputs = {m: {k: v.to(device) for k, v in part.items()} for m, part in batch["inputs"].items()}
        predictions.extend(task.predict(model.encode(inputs, fuse=task.fused)))
    model.train(was_training)
    return predictions


def evaluate(system: System, records: list[dict[str, Any]], batch_size: int = 256,
             device: torch.device | str = "cpu") -> dict[str, dict[str, float]]:
    """{task name: {metric: value}} over the records each task can use; tasks with none are left out."""
    results = {}
    for name, task in system.model.tasks.items():
        usable = task_records(system, name, records)
        if not usable:
            continue
        metrics = task.metrics(predict(system, name, usable, batch_size, device), usable)
        results[name] = {**metrics, "n": float(len(usable))}
    return results
