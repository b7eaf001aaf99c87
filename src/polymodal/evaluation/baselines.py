"""Reference points for generated text: the nearest-neighbour caption baseline (Devlin et al., 2015,
"Language models for image captioning: the quirks and what works"), which copies the caption of the most
similar training example and so measures how much a captioner does beyond retrieving a seen caption."""

from __future__ import annotations

from typing import Any

import torch

from ..system import System


def _features(system: System, modality: str, field: str, records: list[dict[str, Any]],
              batch: int = 256) -> torch.Tensor:
    """(N, F) the records' media as the model's processor prepares them (resized pixels, frames or a
    log-mel spectrogram), flattened and centred to unit length."""
    processor = system.processors[modality]
    rows = []
    for start in range(0, len(records), batch):
        part = [processor.prepare(r[field], None) for r in records[start:start + batch]]
        data = processor.collate(part)["data"]
        rows.append(data.reshape(data.shape[0], -1).float())
    x = torch.cat(rows)
    x = x - x.mean(dim=1, keepdim=True)
    return x / x.norm(dim=1, keepdim=True).clamp(min=1e-8)


def nearest_neighbour_predictions(system: System, task_name: str, train: list[dict[str, Any]],
                                  records: list[dict[str, Any]], modality: str | None = None) -> list[str]:
    """For each of `records`, the target text of the training record whose media (of `modality`, by
    default the task's first input) is closest in cosine similarity of the preprocessed input."""
    task = system.model.tasks[task_name]
    modality = modality or next(iter(task.data.inputs))
    field = task.data.inputs[modality]
    train = [r for r in train if field in r and task.data.target_field in r]
    if not train:
        raise ValueError(f"no training records with {field!r} and {task.data.target_field!r}")
    gallery = _features(system, modality, field, train)
    queries = _features(system, modality, field, records)
    nearest = (queries @ gallery.T).argmax(dim=1).tolist()
    return [str(train[i][task.data.target_field]) for i in nearest]
