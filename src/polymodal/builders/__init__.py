"""Config → objects, in one place: `build_system` turns a config into the model, its processors and task
heads, one small builder per part; `load_system` does the same for a trained run folder.

Modules never see config objects: each builder binds its config mapping to the signature of the class it
builds (`config.bind`), so every key is checked where it is used, and a part's own complaint about its
settings comes back as a `ConfigError` at its config path (`errors.config_errors`). Configs of earlier
versions are first put in today's terms (`migrate`), so there is one path through the builders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..config import Config, bind, load_config
from ..errors import ConfigError
from ..fusion import FUSIONS
from ..models import Backbone
from ..modalities.text.tokenizer import TextTokenizer
from ..runfolder import (CONFIG, TEACHERS_FILE, VOCAB_FILE, WEIGHTS, load_weights, media_tokenizer_dir, model_folder,
                         read_json)
from ..system import MultitaskModel, System
from ..tasks import TASKS
from .decoder import build_decoder
from .encoders import build_encoder, keywords
from .errors import config_errors
from .migrate import migrate
from .tasks import TaskContext, build_task
from .tokenizer import build_tokenizer

PolymodalModel = MultitaskModel  # the name before 0.3

__all__ = ["MultitaskModel", "PolymodalModel", "System", "build_system", "load_system", "migrate"]


def build_system(config: Config, records: list[dict[str, Any]] | None = None, artifacts: Path | None = None,
                 augment: bool | None = None) -> System:
    """Build the model, processors and heads a config describes.

    Args:
        config: a validated config.
        records: training records (to learn the tokenizer and answer/label vocabularies), when training.
        artifacts: a folder with a saved tokenizer and vocabularies, when loading a trained model.
        augment: override `data.augment` (evaluation and serving never augment).
    """
    config = migrate(config)
    spec = config.model
    if not isinstance(spec.get("encoders"), dict) or not spec["encoders"]:
        raise ConfigError("model.encoders: expected a mapping of modality name → encoder config")
    decoder = spec.get("decoder")
    wants_tokenizer = "text" in spec["encoders"] or (isinstance(decoder, dict) and decoder.get("type") != "hf")
    tokenizer = build_tokenizer(config, records, artifacts) if wants_tokenizer else None
    width = _width(spec)
    encoders, processors = {}, {}
    for name, encoder_spec in sorted(spec["encoders"].items()):
        copy = artifacts / media_tokenizer_dir(name) if artifacts is not None else None
        if isinstance(encoder_spec, dict) and encoder_spec.get("path") and copy is not None and copy.is_dir():
            encoder_spec = {**encoder_spec, "path": str(copy)}  # the trained tokenizer the run saved
        encoders[name], processors[name] = build_encoder(name, encoder_spec, width, tokenizer,
                                                         config.data.augment if augment is None else augment)
    backbone, decoder_tokenizer = build_backbone(spec, encoders, width, tokenizer)
    context = TaskContext(backbone, tokenizer, decoder_tokenizer, records or [], load_system,
                          read_json(artifacts / VOCAB_FILE) if artifacts is not None else {},
                          read_json(artifacts / TEACHERS_FILE) if artifacts is not None else {})
    tasks, vocab, teachers = {}, {}, {}
    share = config.train.cfg_dropout
    if share is not None and not 0 <= share < 1:
        raise ConfigError(f"train.cfg_dropout: expected a share in [0, 1) (0.1 is usual), got {share}")
    for name, task_spec in config.tasks.items():
        cls = TASKS.get(task_spec.get("type")) if isinstance(task_spec, dict) else None
        if share is not None and cls is not None and "cfg_dropout" in keywords(cls):
            task_spec = {"cfg_dropout": share, **task_spec}  # the task's own value wins
        tasks[name], words, teacher_dim = build_task(name, task_spec, context)
        if words is not None:
            vocab[name] = words
        if teacher_dim is not None:
            teachers[name] = teacher_dim
    return System(MultitaskModel(backbone, tasks), processors, tokenizer, vocab, teachers)


def load_system(path: str | Path) -> System:
    """A trained system from a run folder or its `model/` folder: built from its saved config and
    artifacts (never augmenting), with its weights."""
    folder = model_folder(path)
    system = build_system(load_config(folder / CONFIG), artifacts=folder, augment=False)
    load_weights(system.model, folder / WEIGHTS)
    return system


def _width(spec: dict[str, Any]) -> int:
    width = spec.get("width")
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise ConfigError(f"model.width: expected a positive integer, got {width!r}")
    return width


def build_fusion(spec: Any, modalities: list[str], width: int) -> nn.Module:
    """The fusion `model.fusion` describes, over `modalities`."""
    if not isinstance(spec, dict) or spec.get("type") not in FUSIONS:
        got = spec.get("type") if isinstance(spec, dict) else spec
        raise ConfigError(f"model.fusion.type: expected one of {', '.join(FUSIONS)}, got {got!r}")
    cls = FUSIONS[spec["type"]]
    settings = bind(cls, {k: v for k, v in spec.items() if k != "type"}, "model.fusion",
                    provided=("modalities", "width"))
    with config_errors("model.fusion"):
        return cls(modalities, width, **settings)


def build_backbone(spec: dict[str, Any], encoders: dict[str, nn.Module], width: int,
                   tokenizer: TextTokenizer | None) -> tuple[Backbone, TextTokenizer | None]:
    """The backbone over built encoders (`model`'s own keys, its fusion and decoder), and the tokenizer of
    the text its decoder writes."""
    own = {k: v for k, v in spec.items() if k not in ("encoders", "fusion", "tokenizer", "decoder")}
    settings = bind(Backbone, own, "model", provided=("encoders", "fusion", "decoder", "memory"),
                    elsewhere=("encoders", "fusion", "tokenizer", "decoder"),
                    hint=" (a fusion's settings go under model.fusion)")
    fusion = build_fusion(spec.get("fusion"), sorted(encoders), width)
    decoder_tokenizer = tokenizer
    if spec.get("decoder") is not None:
        codes = {m: (e.num_codes, e.num_tokens) for m, e in encoders.items() if getattr(e, "frozen", False)
                 and hasattr(e, "decode_codes")}  # trained tokenizers: the decoder reads and writes their codes
        settings["decoder"], settings["memory"], decoder_tokenizer = build_decoder(
            spec["decoder"], width, sorted(encoders), tokenizer, codes)
        if settings["memory"] == "fused" and not fusion.gives_tokens:
            raise ConfigError(f"model.decoder.memory: 'fused' needs a fusion that gives a token sequence; "
                              f"{spec['fusion']['type']!r} gives one vector per example (use memory: modalities)")
    with config_errors("model"):
        return Backbone(encoders, fusion, **settings), decoder_tokenizer
