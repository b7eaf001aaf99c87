"""One task from `tasks.NAME`: its data side and its head, each given the keys its constructor takes, and
the parts of the backbone the head borrows (its decoder, its fusion, the encoder of its input)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import bind
from ..errors import ConfigError
from ..models.backbone import Backbone
from ..models.decoder import TextDecoder
from ..modalities.text.tokenizer import TextTokenizer
from ..tasks import TASKS, Task, TaskData
from .encoders import keywords
from .errors import config_errors
from .teacher import LoadSystem, build_teacher

NEEDS = {  # what a task may need from the model, and the setting that provides it
    "pooled": "a fused vector (every fusion gives one)",
    "embeddings": "per-modality embeddings in a shared space: set model.embed_dim",
    "decoder": "a text decoder: set model.decoder (e.g. {type: transformer, depth: 2})",
}
DATA_PROVIDED = ("vocab", "tokenizer", "teacher_processor")  # a data side's arguments the builder fills
HEAD_PROVIDED = ("data", "width", "embed_dim", "teacher", "decoder", "memory", "fusion", "encoder")


@dataclass
class TaskContext:
    """What every task is built against: the backbone, the tokenizers, the training records (to learn
    vocabularies) or what a saved run learnt, and the loader of trained runs (teachers)."""

    backbone: Backbone
    tokenizer: TextTokenizer | None  # the text encoder's
    decoder_tokenizer: TextTokenizer | None  # the text decoder's (the same, but for a Hugging Face LM)
    records: list[dict[str, Any]]
    load: LoadSystem
    saved_vocab: dict[str, list[str]] = field(default_factory=dict)
    saved_teachers: dict[str, int] = field(default_factory=dict)


def task_class(name: str, spec: dict[str, Any], context: TaskContext) -> type[Task]:
    """The head class `tasks.NAME.type` names, checked against what the model has."""
    where, kind = f"tasks.{name}", spec.get("type")
    if kind not in TASKS:
        raise ConfigError(f"{where}.type: expected one of {', '.join(sorted(TASKS))}, got {kind!r}")
    cls = TASKS[kind]
    wanted = spec["inputs"] if isinstance(spec.get("inputs"), dict) else cls.data_class.inputs
    encoders = context.backbone.encoders
    missing = [m for m in wanted if m not in encoders]
    if missing:
        raise ConfigError(f"{where}: task type {kind!r} needs a {missing[0]!r} encoder; "
                          f"model.encoders has: {', '.join(sorted(encoders))}")
    provides = {"pooled", *(["embeddings"] if context.backbone.embed_dim is not None else []),
                *(["decoder"] if context.backbone.decoder is not None else [])}
    lacking = [need for need in cls.needs if need not in provides]
    if lacking:
        raise ConfigError(f"{where}: task type {kind!r} needs {NEEDS[lacking[0]]}")
    return cls


def build_task(name: str, spec: dict[str, Any], context: TaskContext) -> tuple[Task, list[str] | None, int | None]:
    """The task, the vocabulary it learnt (answers, labels) or None, and its teacher's width or None.

    One mapping in the config, two parts: each key goes to the side whose constructor takes it."""
    where, cls = f"tasks.{name}", task_class(name, spec, context)
    data_cls, spec = cls.data_class, {k: v for k, v in spec.items() if k not in ("type", "data")}
    data_keys = keywords(data_cls) - set(DATA_PROVIDED)
    data_kwargs = bind(data_cls, {k: v for k, v in spec.items() if k in data_keys}, where, provided=DATA_PROVIDED)
    head_spec = {k: v for k, v in spec.items() if k not in data_keys}
    teacher_spec = head_spec.pop("teacher", None) if "teacher" in keywords(cls) else None
    head_kwargs = bind(cls, head_spec, where, provided=HEAD_PROVIDED, elsewhere=(*data_keys, "data"))
    modality = next(iter(spec.get("inputs") or data_cls.inputs))  # the first input: a one-modality task's
    parts = _parts(context, modality)
    if "teacher" in keywords(cls):  # distillation: a frozen teacher, its inputs through its own processor
        parts["teacher"] = build_teacher(teacher_spec, modality, head_kwargs.get("target", "embedding"),
                                         f"{where}.teacher", context.saved_teachers.get(name), context.load)
        data_kwargs["teacher_processor"] = parts["teacher"].processor
    if "tokenizer" in keywords(data_cls):  # the tokenizer of the text it generates (the decoder's) or reads
        encoder_side = data_cls.tokenizer_of == "encoder"
        data_kwargs["tokenizer"] = context.tokenizer if encoder_side else context.decoder_tokenizer
    vocab = _vocab(name, data_cls, data_kwargs, context) if "vocab" in keywords(data_cls) else None
    if vocab is not None:
        data_kwargs["vocab"] = vocab
    with config_errors(where):
        task = cls(data_cls(**data_kwargs), **head_kwargs, **{k: v for k, v in parts.items() if k in keywords(cls)})
    _check_lengths(where, task, context.backbone)
    return task, vocab, parts["teacher"].dim if "teacher" in parts else None


def _parts(context: TaskContext, modality: str) -> dict[str, Any]:
    """What the builder can hand a head besides its config keys."""
    backbone = context.backbone
    return {"width": backbone.width, "embed_dim": backbone.embed_dim, "decoder": backbone.decoder,
            "memory": backbone.memory, "fusion": backbone.fusion, "encoder": backbone.encoders[modality]}


def _vocab(name: str, data_cls: type[TaskData], options: dict[str, Any], context: TaskContext) -> list[str]:
    """The task's answer or label vocabulary: what the saved run learnt, else learnt from the records."""
    words = context.saved_vocab.get(name) if context.saved_vocab else data_cls.vocab_from(context.records, options)
    if not words:
        raise ConfigError(f"tasks.{name}: no {data_cls.target_field!r} values in the training data to learn from")
    return list(words)


def _check_lengths(where: str, task: Task, backbone: Backbone) -> None:
    """A generative task's longest sequence must fit our decoder's positions."""
    if "decoder" not in task.needs or not isinstance(backbone.decoder, TextDecoder):
        return
    longest = task.data.longest_text()
    if longest > backbone.decoder.max_length:
        raise ConfigError(f"{where}: its sequences take up to {longest} positions (start, prompt up to "
                          f"max_prompt_length, answer up to max_length) but model.decoder.max_length is "
                          f"{backbone.decoder.max_length}: raise it, or lower the task's lengths")
