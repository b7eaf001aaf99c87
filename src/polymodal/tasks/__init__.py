"""Tasks (seed §2.4): a head, a loss, predictions and metrics each. Add one here by its config `type`."""

from .base import Task
from .classification import ClassificationTask
from .contrastive import ContrastiveTask
from .matching import MatchingTask
from .vqa import VQATask

TASKS: dict[str, type[Task]] = {
    "contrastive": ContrastiveTask,
    "vqa": VQATask,
    "classification": ClassificationTask,
    "matching": MatchingTask,
}

__all__ = ["Task", "TASKS", "ClassificationTask", "ContrastiveTask", "MatchingTask", "VQATask"]
