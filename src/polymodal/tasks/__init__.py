"""Tasks (docs/concepts.md#multi-task): a data side (examples, targets, metrics) and a head (loss, predictions) each.
Add one here by its config `type`: the head class, whose `data_class` is its data side."""

from .base import Task, TaskData
from .captioning import (CaptionData, CaptionTask, GenerativeVQAData, GenerativeVQATask, TranscriptionData,
                         TranscriptionTask)
from .classification import ClassificationData, ClassificationTask
from .contrastive import ContrastiveData, ContrastiveTask
from .ctc import CTCData, CTCTask
from .distillation import DistillationData, DistillationTask
from .itm import ITMData, ITMTask
from .masked_media import MaskedMediaData, MaskedMediaTask
from .masked_text import MaskedLanguageTask, MaskedTextData
from .media_generation import (ClipTargetData, MediaGenerationTask, MediaTargetData, SoundTargetData,
                               TextToAudioTask, TextToVideoTask)
from .matching import MatchingData, MatchingTask
from .reconstruction import ReconstructionData, ReconstructionTask
from .vqa import VQAData, VQATask

TASKS: dict[str, type[Task]] = {
    "contrastive": ContrastiveTask,
    "vqa": VQATask,
    "classification": ClassificationTask,
    "matching": MatchingTask,
    "caption": CaptionTask,
    "transcription": TranscriptionTask,
    "ctc": CTCTask,
    "vqa_generative": GenerativeVQATask,
    "distill": DistillationTask,
    "itm": ITMTask,
    "mlm": MaskedLanguageTask,
    "masked_modelling": MaskedMediaTask,
    "reconstruction": ReconstructionTask,
    "text_to_image": MediaGenerationTask,
    "text_to_audio": TextToAudioTask,
    "text_to_video": TextToVideoTask,
}

__all__ = ["Task", "TaskData", "TASKS", "ReconstructionData", "ReconstructionTask", "CaptionData", "CaptionTask", "TranscriptionData", "TranscriptionTask",
           "CTCData", "CTCTask",
           "GenerativeVQAData", "GenerativeVQATask",
           "ClassificationData", "ClassificationTask", "ContrastiveData", "DistillationData", "DistillationTask",
           "ContrastiveTask", "MatchingData", "MatchingTask", "VQAData", "VQATask", "ITMData", "ITMTask",
           "MaskedTextData", "MaskedLanguageTask", "MaskedMediaData", "MaskedMediaTask",
           "MediaGenerationTask", "MediaTargetData", "SoundTargetData", "TextToAudioTask",
           "ClipTargetData", "TextToVideoTask"]
