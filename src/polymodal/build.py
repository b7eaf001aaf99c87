"""Config → objects, in one place: tokenizer, encoders, processors, the joint model and task heads.

Modules never see config objects; this builder binds each config mapping to the signature of the class
it builds, so every key is checked where it is used.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import PACKAGE_PREFIX, Config, bind
from .errors import ConfigError
from .fusion import FUSIONS
from .models import MultimodalModel
from .models.composition import MEMORIES
from .models.decoder import TextDecoder
from .models.hf_decoder import HFLanguageModel
from .models.multimodal_lm import MultimodalLM
from .models.output import ModelOutput
from .models.teacher import Teacher, hf_teacher, run_teacher
from .modalities.pretrained import resolve_model_path
from .modalities.registry import PROCESSORS, Processor, get_modality, make_processor, with_defaults
from .modalities.text.tokenizer import TextTokenizer
from .tasks import TASKS, Task

TOKENIZER_FILE = "tokenizer.json"
VOCAB_FILE = "vocab.json"
TEACHERS_FILE = "teachers.json"  # each distillation teacher's width: a saved student loads without its teacher
TOKENIZER_FIELDS = ("text", "question")  # record fields a learnt tokenizer reads

# Model types of Polymodal 0.1, kept as aliases: each is the one composition with a fusion (and defaults);
# its keys are the model's (`width`, `embed_dim`, `init_temperature`) and the fusion's, side by side.
MODEL_ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
    "joint_transformer": ("early", {}),
    "dual_encoder": ("late", {"embed_dim": 128}),
}


class PolymodalModel(nn.Module):
    """A joint model plus one head per task; one `forward` computes every task's loss (one DDP call)."""

    def __init__(self, backbone: nn.Module, tasks: dict[str, Task]):
        super().__init__()
        self.backbone = backbone
        self.tasks = nn.ModuleDict(tasks)

    def encode(self, inputs: dict[str, dict[str, torch.Tensor]], fuse: bool = True) -> ModelOutput:
        return self.backbone(inputs, fuse=fuse)

    def forward(self, batches: dict[str, dict[str, Any]]) -> dict[str, dict[str, torch.Tensor]]:
        """Args: task name → collated batch. Returns: task name → {"loss": scalar, ...}.

        Tasks handed the very same `inputs` object (the trainer gives one batch to tasks that read the same
        records and fields) share one backbone pass, unless a task changes its inputs first (`corrupt`:
        masked modelling sees masked inputs)."""
        shared: dict[int, ModelOutput] = {}
        fuse_for: dict[int, bool] = {}
        for name, batch in batches.items():
            if not self.tasks[name].corrupts:
                key = id(batch["inputs"])
                fuse_for[key] = fuse_for.get(key, False) or self.tasks[name].fused
        results = {}
        for name, batch in batches.items():
            task = self.tasks[name]
            if task.corrupts:
                inputs, target = task.corrupt(batch["inputs"], batch["target"])
                results[name] = task(self.backbone(inputs, fuse=task.fused), target)
                continue
            key = id(batch["inputs"])
            if key not in shared:
                shared[key] = self.backbone(batch["inputs"], fuse=fuse_for[key])
            results[name] = task(shared[key], batch["target"])
        return results


@dataclass
class System:
    """Everything a config builds: the model, its processors and its learnt vocabularies."""

    model: PolymodalModel
    processors: dict[str, Processor]
    tokenizer: TextTokenizer | None
    vocab: dict[str, list[str]]
    teachers: dict[str, int] = field(default_factory=dict)

    def save_artifacts(self, folder: Path) -> None:
        """Write the tokenizer, vocabularies and teacher widths that `build_system(..., artifacts=folder)`
        reads back."""
        folder.mkdir(parents=True, exist_ok=True)
        if self.tokenizer is not None:
            self.tokenizer.save(folder / TOKENIZER_FILE)
        (folder / VOCAB_FILE).write_text(json.dumps(self.vocab, indent=1))
        if self.teachers:
            (folder / TEACHERS_FILE).write_text(json.dumps(self.teachers, indent=1))


def _tokenizer(config: Config, records: list[dict[str, Any]] | None, artifacts: Path | None) -> TextTokenizer:
    """The run's own saved tokenizer, else `model.tokenizer.path`, else the one of the model `train.init_from`
    starts from (its text weights only make sense with its ids), else one learnt from the records' text."""
    spec = dict(config.model.get("tokenizer") or {})
    unknown = set(spec) - {"path", "vocab_size"}
    if unknown:
        raise ConfigError(f"model.tokenizer: unknown key {sorted(unknown)[0]!r}; allowed keys: path, vocab_size")
    if artifacts is not None and (artifacts / TOKENIZER_FILE).is_file():
        return TextTokenizer.load(artifacts / TOKENIZER_FILE)
    text = (config.model.get("encoders") or {}).get("text")
    if isinstance(text, dict) and text.get("type") == "hf":  # a pretrained text encoder reads its own tokens
        if spec:
            raise ConfigError("model.tokenizer: the pretrained text encoder (model.encoders.text.type: hf) "
                              "brings its own tokenizer; leave model.tokenizer out")
        try:
            return TextTokenizer.from_hf(resolve_model_path(text.get("path", "")))
        except ValueError as error:
            raise ConfigError(f"model.encoders.text.{error}") from None
    if spec.get("path"):
        if str(spec["path"]).startswith(PACKAGE_PREFIX):  # a tokenizer inside an installed package's model folder
            try:
                return TextTokenizer.load(resolve_model_path(spec["path"]))
            except ValueError as error:
                raise ConfigError(f"model.tokenizer.{error}") from None
        path = Path(spec["path"])
        return TextTokenizer.load(path if path.is_absolute() else config.base_dir / path)
    if config.train.init_from:
        source = Path(config.train.init_from)
        for candidate in (source / TOKENIZER_FILE, source / "model" / TOKENIZER_FILE):
            if candidate.is_file():
                return TextTokenizer.load(candidate)
    if not records:
        raise ConfigError("model.tokenizer: no tokenizer path and no training records to learn one from")
    # every text field, not only this config's: a model pre-trained on captions can then be fine-tuned on
    # questions with the same vocabulary
    fields = [*TOKENIZER_FIELDS, *_generated_fields(config)]
    texts = [str(r[f]) for r in records for f in dict.fromkeys(fields) if f in r]
    return TextTokenizer.train(texts, vocab_size=int(spec.get("vocab_size", 1000)))


def _generated_fields(config: Config) -> list[str]:
    """The record fields the config's generative tasks write (answers, sound captions): a learnt tokenizer
    must have their words."""
    fields = []
    for spec in config.tasks.values():
        cls = TASKS.get(spec.get("type")) if isinstance(spec, dict) else None
        if cls is not None and "decoder" in cls.needs:
            fields.append(str(spec.get("target_field") or cls.data_class.target_field))
    return fields


def _nested_encoder(modality_name: str, spec: Any, where: str, provided: dict[str, Any]) -> nn.Module:
    """An encoder inside another one (a video encoder's frame encoder), from its config mapping."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping with a type, got {spec!r}")
    spec = dict(spec)
    modality, kind = get_modality(modality_name, where), spec.pop("type", None)
    # only encoders that read the modality's usual tensors: the outer encoder's processor makes them
    usable = {k: c for k, c in modality.encoders.items() if c not in PROCESSORS}
    if kind not in usable:
        raise ConfigError(f"{where}.type: expected one of {', '.join(sorted(usable))}, got {kind!r}")
    cls = usable[kind]
    try:
        return cls(**bind(cls, spec, where, provided=tuple(provided)), **provided)
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from None


def _keywords(cls: type) -> set[str]:
    """The keyword parameters of `cls`'s constructor."""
    return {name for name, p in inspect.signature(cls).parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


NEEDS = {  # what a task may need from the model, and the setting that provides it
    "pooled": "a fused vector (every fusion gives one)",
    "embeddings": "per-modality embeddings in a shared space: set model.embed_dim",
    "decoder": "a text decoder: set model.decoder (e.g. {type: transformer, depth: 2})",
}

DECODERS = ("transformer", "hf")  # model.decoder.type: ours, or a local Hugging Face causal LM
ARCHITECTURES = ("encoder_decoder", "decoder_only")


def _decoder(spec: Any, width: int, modalities: list[str],
             tokenizer: TextTokenizer | None) -> tuple[nn.Module, str, TextTokenizer]:
    """The text decoder `model.decoder` describes, what its memory is, and its tokenizer.

    `type: transformer` is ours, cross-attending to a memory of width `width` (`architecture:
    encoder_decoder`, seed §4.4) or reading projected media in its input sequence (`decoder_only`);
    `type: hf` is a local Hugging Face causal LM (`path`), always decoder-only, with its own tokenizer.
    """
    where = "model.decoder"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping with a type ({', '.join(DECODERS)}), got {spec!r}")
    spec = dict(spec)
    kind, memory = spec.pop("type", None), spec.pop("memory", "modalities")
    if kind not in DECODERS:
        raise ConfigError(f"{where}.type: expected one of {', '.join(DECODERS)}, got {kind!r}")
    if memory not in MEMORIES:
        raise ConfigError(f"{where}.memory: expected one of {', '.join(MEMORIES)}, got {memory!r}")
    architecture = spec.pop("architecture", "decoder_only" if kind == "hf" else "encoder_decoder")
    if architecture not in ARCHITECTURES or (kind == "hf" and architecture != "decoder_only"):
        allowed = "decoder_only" if kind == "hf" else ", ".join(ARCHITECTURES)
        raise ConfigError(f"{where}.architecture: expected {allowed} for type {kind!r}, got {architecture!r}")
    projector_type = spec.pop("projector", "mlp")
    if architecture == "encoder_decoder" and projector_type != "mlp":
        raise ConfigError(f"{where}.projector: only a decoder-only model projects media into its sequence")
    try:
        if kind == "hf":
            kwargs = bind(HFLanguageModel, spec, where, elsewhere=("type", "architecture", "projector"))
            lm = HFLanguageModel(**kwargs)
            tokenizer = TextTokenizer.from_hf(lm.path)
        else:
            context = width if architecture == "encoder_decoder" else None
            kwargs = bind(TextDecoder, spec, where, provided=("vocab_size", "context_dim"),
                          elsewhere=("type", "memory", "architecture", "projector"))
            lm = TextDecoder(**kwargs, vocab_size=tokenizer.vocab_size, context_dim=context)
            if architecture == "encoder_decoder":
                return lm, memory, tokenizer
        return MultimodalLM(lm, modalities, width, projector_type=projector_type), memory, tokenizer
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from None


def _teacher(spec: Any, modality: str, target: str, where: str, dim: int | None = None) -> Teacher:
    """The frozen teacher `spec` describes: `{type: hf, path: DIR, ...}` (a pretrained encoder of `modality`
    and its settings) or `{run: RUN_FOLDER}` (a trained Polymodal model). `dim`: its width as a saved run
    recorded it; the teacher's files are then read only when it first runs."""
    if not isinstance(spec, dict) or ("run" in spec) == ("type" in spec):
        raise ConfigError(f"{where}: expected {{type: hf, path: DIR}} (a pretrained encoder) or {{run: RUN}} "
                          f"(a trained Polymodal model), got {spec!r}")
    spec = dict(spec)
    try:
        if "run" in spec:
            if set(spec) != {"run"}:
                raise ConfigError(f"{where}: a run teacher takes only 'run', got {', '.join(sorted(spec))}")
            return run_teacher(modality, spec["run"], target, dim)
        kind = spec.pop("type")
        encoders = get_modality(modality, where).encoders
        if kind != "hf" or "hf" not in encoders:
            raise ConfigError(f"{where}.type: a teacher is a pretrained encoder (type: hf) or a run; got {kind!r}")
        cls = encoders[kind]
        settings = bind(cls, spec, where, provided=("out_dim", "lora"))

        def processor(values: dict[str, Any]) -> Processor:
            tokenizer = TextTokenizer.from_hf(resolve_model_path(values["path"])) if modality == "text" else None
            return make_processor(get_modality(modality, where), cls, with_defaults(cls, values), False, tokenizer)

        return hf_teacher(modality, cls, settings, target, processor, dim)
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from None


def split_model_spec(spec: dict[str, Any]) -> tuple[str, dict[str, Any], str, dict[str, Any]]:
    """(fusion type, its settings, where they are in the config, the model's own settings) from `model`:
    `model.fusion: {type: ..., ...}`, or a legacy `model.type` whose fusion settings sit beside the model's."""
    spec = dict(spec)
    model_type, fusion = spec.pop("type", None), spec.pop("fusion", None)
    if model_type is None:
        if not isinstance(fusion, dict) or fusion.get("type") not in FUSIONS:
            got = fusion.get("type") if isinstance(fusion, dict) else fusion
            raise ConfigError(f"model.fusion.type: expected one of {', '.join(FUSIONS)}, got {got!r}")
        fusion = dict(fusion)
        return fusion.pop("type"), fusion, "model.fusion", spec
    if model_type not in MODEL_ALIASES:
        raise ConfigError(f"model.type: expected one of {', '.join(sorted(MODEL_ALIASES))}, got {model_type!r} "
                          f"(or leave model.type out and choose model.fusion)")
    if fusion is not None:
        raise ConfigError(f"model.fusion: model.type {model_type!r} already chooses the fusion; give one of the two")
    fusion_type, defaults = MODEL_ALIASES[model_type]
    fusion_keys = set(inspect.signature(FUSIONS[fusion_type]).parameters) - {"modalities", "width"}
    model_keys = set(inspect.signature(MultimodalModel).parameters) - {"encoders", "fusion"}
    unknown = sorted(set(spec) - fusion_keys - model_keys)
    if unknown:
        allowed = ", ".join(sorted(fusion_keys | model_keys | {"encoders", "tokenizer", "type"}))
        raise ConfigError(f"model: unknown key {unknown[0]!r} for model.type {model_type!r}; allowed keys: {allowed}")
    fusion_spec = {k: v for k, v in spec.items() if k in fusion_keys}
    return fusion_type, fusion_spec, "model", {**defaults, **{k: v for k, v in spec.items() if k in model_keys}}


def build_system(config: Config, records: list[dict[str, Any]] | None = None, artifacts: Path | None = None,
                 augment: bool | None = None) -> System:
    """Build the model, processors and heads a config describes.

    Args:
        config: a validated config.
        records: training records (to learn the tokenizer and answer/label vocabularies), when training.
        artifacts: a folder with a saved tokenizer and vocabularies, when loading a trained model.
        augment: override `data.augment` (evaluation and serving never augment).
    """
    spec = dict(config.model)
    encoder_specs = spec.pop("encoders", None)
    decoder_spec = spec.pop("decoder", None)
    spec.pop("tokenizer", None)
    if not isinstance(encoder_specs, dict) or not encoder_specs:
        raise ConfigError("model.encoders: expected a mapping of modality name → encoder config")
    fusion_type, fusion_spec, fusion_where, model_spec = split_model_spec(spec)
    model_kwargs = bind(MultimodalModel, model_spec, "model", provided=("encoders", "fusion", "decoder", "memory"),
                        elsewhere=("encoders", "fusion", "tokenizer", "decoder"),
                        hint=" (a fusion's settings go under model.fusion)")
    width = model_kwargs.get("width")
    if not isinstance(width, int) or width < 1:
        raise ConfigError(f"model.width: expected a positive integer, got {width!r}")

    wants_tokenizer = "text" in encoder_specs or (isinstance(decoder_spec, dict) and decoder_spec.get("type") != "hf")
    tokenizer = _tokenizer(config, records, artifacts) if wants_tokenizer else None
    encoders, processors = {}, {}
    for name, enc_spec in sorted(encoder_specs.items()):
        where = f"model.encoders.{name}"
        modality = get_modality(name, where)
        enc_spec = dict(enc_spec or {})
        enc_type = enc_spec.pop("type", None)
        if enc_type not in modality.encoders:
            raise ConfigError(f"{where}.type: expected one of {', '.join(sorted(modality.encoders))}, got {enc_type!r}")
        cls = modality.encoders[enc_type]
        options = {key: enc_spec.pop(key, default) for key, default in modality.processor_options.items()}
        nested = getattr(cls, "nested", {})  # keys that hold another modality's encoder (a video's frames)
        nested_specs = {key: enc_spec.pop(key, default) for key, (_, default) in nested.items()}
        kwargs = bind(cls, enc_spec, where, provided=(*modality.builder_provides, *nested),
                      elsewhere=(*modality.processor_options, *nested))
        provided = {"out_dim": width}
        if tokenizer is not None and "vocab_size" in _keywords(cls):
            provided.update(vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id)
        inner = {key: _nested_encoder(nested[key][0], spec, f"{where}.{key}",
                                      cls.nested_settings(key, **with_defaults(cls, {**kwargs, **provided})))
                 for key, spec in nested_specs.items() if spec is not None}
        try:  # encoders and processors check their settings' consistency (sizes that must divide, ...)
            encoders[name] = cls(**kwargs, **provided, **inner)
            processors[name] = make_processor(
                modality, cls, {**with_defaults(cls, kwargs), **nested_specs, **options},
                config.data.augment if augment is None else augment, tokenizer)
        except ValueError as error:
            raise ConfigError(f"{where}: {error}") from None

    fusion_cls = FUSIONS[fusion_type]
    fusion_kwargs = bind(fusion_cls, fusion_spec, fusion_where, provided=("modalities", "width"))
    try:
        fusion = fusion_cls(sorted(encoders), width, **fusion_kwargs)
    except ValueError as error:
        raise ConfigError(f"{fusion_where}.{error}") from None
    decoder_tokenizer = tokenizer
    if decoder_spec is not None:
        model_kwargs["decoder"], model_kwargs["memory"], decoder_tokenizer = _decoder(
            decoder_spec, width, sorted(encoders), tokenizer)
        if model_kwargs["memory"] == "fused" and not getattr(fusion, "gives_tokens", True):
            raise ConfigError(f"model.decoder.memory: 'fused' needs a fusion that gives a token sequence; "
                              f"{fusion_type!r} gives one vector per example (use memory: modalities)")
    try:
        backbone = MultimodalModel(encoders, fusion, **model_kwargs)
    except ValueError as error:
        raise ConfigError(f"model.{error}") from None
    provides = ({"pooled"} | ({"embeddings"} if backbone.embed_dim is not None else set())
                | ({"decoder"} if backbone.decoder is not None else set()))

    saved_vocab = json.loads((artifacts / VOCAB_FILE).read_text()) if artifacts is not None else {}
    saved_teachers = (json.loads((artifacts / TEACHERS_FILE).read_text())
                      if artifacts is not None and (artifacts / TEACHERS_FILE).is_file() else {})
    tasks, vocab, teachers = {}, {}, {}
    for name, task_spec in config.tasks.items():
        where = f"tasks.{name}"
        task_spec = dict(task_spec)
        task_type = task_spec.pop("type")
        task_spec.pop("data", None)  # the task's own manifests: the trainer and evaluation read them
        if task_type not in TASKS:
            raise ConfigError(f"{where}.type: expected one of {', '.join(sorted(TASKS))}, got {task_type!r}")
        cls = TASKS[task_type]
        data_cls = cls.data_class
        wanted = task_spec.get("inputs") if isinstance(task_spec.get("inputs"), dict) else data_cls.inputs
        missing = [m for m in wanted if m not in encoders]
        if missing:
            raise ConfigError(f"{where}: task type {task_type!r} needs a {missing[0]!r} encoder; "
                              f"model.encoders has: {', '.join(sorted(encoders))}")
        lacking = [need for need in cls.needs if need not in provides]
        if lacking:
            raise ConfigError(f"{where}: task type {task_type!r} needs {NEEDS[lacking[0]]}")
        # one mapping in the config, two parts: each key goes to the side whose constructor takes it
        data_params, head_params = _keywords(data_cls), _keywords(cls)
        data_keys = data_params - {"vocab", "tokenizer"}
        teacher_spec = task_spec.pop("teacher", None) if "teacher" in head_params else None
        data_keys -= {"teacher_processor"}
        data_kwargs = bind(data_cls, {k: v for k, v in task_spec.items() if k in data_keys}, where,
                           provided=("vocab", "tokenizer", "teacher_processor"))
        if "tokenizer" in data_params:  # the tokenizer of the text it generates (the decoder's) or reads
            data_kwargs["tokenizer"] = tokenizer if data_cls.tokenizer_of == "encoder" else decoder_tokenizer
        head_kwargs = bind(cls, {k: v for k, v in task_spec.items() if k not in data_keys}, where,
                           provided=("data", "width", "teacher", "embed_dim"), elsewhere=(*data_keys, "data"))
        if "teacher" in head_params:  # distillation: a frozen teacher, its inputs through its own processor
            modality = next(iter(wanted))
            head_kwargs["teacher"] = _teacher(teacher_spec, modality, head_kwargs.get("target", "embedding"),
                                              f"{where}.teacher", saved_teachers.get(name))
            teachers[name] = head_kwargs["teacher"].dim
            data_kwargs["teacher_processor"] = head_kwargs["teacher"].processor
        if "embed_dim" in head_params:
            head_kwargs["embed_dim"] = backbone.embed_dim
        if "vocab" in data_params:
            words = saved_vocab.get(name) if saved_vocab else data_cls.vocab_from(records or [], data_kwargs)
            if not words:
                raise ConfigError(f"{where}: no {data_cls.target_field!r} values in the training data to learn from")
            vocab[name] = list(words)
            data_kwargs["vocab"] = vocab[name]
        if "width" in head_params:
            head_kwargs["width"] = width
        try:
            tasks[name] = cls(data_cls(**data_kwargs), **head_kwargs)
            tasks[name].attach(backbone)
        except ValueError as error:
            raise ConfigError(f"{where}.{error}") from None
        if "decoder" in cls.needs:  # the fusion runs for a generative task only when its output is the memory
            tasks[name].fused = backbone.memory in ("fused", "pooled")
            longest = tasks[name].data.longest_text()
            if isinstance(backbone.decoder, TextDecoder) and longest > backbone.decoder.max_length:
                raise ConfigError(f"{where}: its sequences take up to {longest} positions (start, prompt up to "
                                  f"max_prompt_length, answer up to max_length) but model.decoder.max_length is "
                                  f"{backbone.decoder.max_length}: raise it, or lower the task's lengths")
    return System(PolymodalModel(backbone, tasks), processors, tokenizer, vocab, teachers)
