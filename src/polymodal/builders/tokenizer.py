"""The text tokenizer a config needs: saved with the run, named in the config, the pretrained text
encoder's own, the one of the model a fine-tuning run starts from, or learnt from the training records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import PACKAGE_PREFIX, Config
from ..errors import ConfigError
from ..modalities.pretrained import resolve_model_path
from ..modalities.text.tokenizer import TextTokenizer
from ..runfolder import MODEL_DIR, TOKENIZER_FILE
from ..tasks import TASKS
from .errors import config_errors

TOKENIZER_FIELDS = ("text", "question")  # record fields a learnt tokenizer reads


def build_tokenizer(config: Config, records: list[dict[str, Any]] | None, artifacts: Path | None) -> TextTokenizer:
    """The run's own saved tokenizer, else the pretrained text encoder's, else `model.tokenizer.path`, else
    the one of the model `train.init_from` starts from (its text weights only make sense with its ids),
    else one learnt from the records' text."""
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
        with config_errors("model.encoders.text"):
            return TextTokenizer.from_hf(resolve_model_path(text.get("path", "")))
    if spec.get("path"):
        if str(spec["path"]).startswith(PACKAGE_PREFIX):  # a tokenizer inside an installed package's model folder
            with config_errors("model.tokenizer"):
                return TextTokenizer.load(resolve_model_path(spec["path"]))
        path = Path(spec["path"])
        return TextTokenizer.load(path if path.is_absolute() else config.base_dir / path)
    if config.train.init_from:
        source = Path(config.train.init_from)
        for candidate in (source / TOKENIZER_FILE, source / MODEL_DIR / TOKENIZER_FILE):
            if candidate.is_file():
                return TextTokenizer.load(candidate)
    if not records:
        raise ConfigError("model.tokenizer: no tokenizer path and no training records to learn one from")
    # every text field, not only this config's: a model pre-trained on captions can then be fine-tuned on
    # questions with the same vocabulary
    fields = dict.fromkeys([*TOKENIZER_FIELDS, *_generated_fields(config)])
    texts = [str(r[f]) for r in records for f in fields if f in r]
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
