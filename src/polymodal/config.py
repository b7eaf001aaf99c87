"""Config: YAML → validated plain values. The only place where config becomes arguments.

A config has four sections: `model`, `tasks`, `data`, `train`. `data` and `train` are checked against
the dataclasses below; `model`, its encoders and each task are checked by binding their keys to the
signature of the class they build (as torchtune does), so an unknown or mistyped key is an error that
names the key and the allowed ones, wherever it is.
"""

from __future__ import annotations

import collections.abc
import copy
import os
import re
import dataclasses
import inspect
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from .errors import ConfigError

SECTIONS = ("model", "tasks", "data", "train")
PRECISIONS = ("auto", "fp32", "bf16")
LOGGERS = ("tensorboard", "wandb")  # training/loggers.py
STRATEGIES = ("ddp", "fsdp")  # training/sharding.py


@dataclass
class DataConfig:
    """Where the data is and how to read it (`data:` section).

    Attributes:
        train: the training manifest (JSON Lines), relative to the config file or absolute; or WebDataset
            tar shards (`DIR/shard-{000000..000009}.tar`, or the folder `polymodal data shard` wrote),
            streamed: split by process and loader worker, shuffled through `shuffle_buffer`, resumable.
        val: the validation manifest (or shards, read whole): validation during and at the end of training.
        test: the test manifest: what `polymodal ablate` and `polymodal eval RUN` (without `--data`)
            evaluate on.
        on_error: what a bad record does: `fail` (the run stops with a report of every problem, as
            `polymodal data check` gives it) or `skip` (bad records are left out, and the run says how many).
        augment: random small translations and brightness/contrast changes of images and frames in
            training (no flips: "left of" must keep its meaning); for audio, a random window and gain.
        num_workers: data-loader worker processes (0: load in the training process); `auto`: the
            process's cores up to 8 when training on a GPU, one on a CPU.
        train_fraction: train on this share of each training manifest: a fixed subset chosen by a hash
            of each record's id, the same for every seed, and nested (the 10% subset is inside the 20% one).
        shuffle_buffer: a training split given as WebDataset shards (`DIR/shard-{000000..000009}.tar`,
            written by `polymodal data shard`) is streamed, and its samples shuffled through a buffer of
            this many (the shards' order is shuffled too, each epoch).
    """

    train: str | None = None
    val: str | None = None
    test: str | None = None
    on_error: str = "fail"  # fail | skip
    augment: bool = False
    num_workers: int | str = "auto"  # auto | a count (0: load in the training process)
    train_fraction: float = 1.0  # train on this share of each training manifest (a fixed subset per record)
    shuffle_buffer: int = 1000  # samples in the shuffle buffer of a training split streamed from shards


@dataclass
class TrainConfig:
    """The optimisation recipe (`train:` section).

    Attributes:
        max_steps: optimiser steps to train.
        batch_size: the global batch per optimiser step, over all processes and accumulation steps.
        accumulate: gradient-accumulation micro-steps per optimiser step.
        lr: the peak learning rate (AdamW).
        weight_decay: AdamW's decoupled weight decay, on weight matrices only (biases, norms, positions,
            special tokens and temperatures are exempt).
        warmup_steps: linear warm-up from 0 to `lr`, then a cosine decay to `lr * min_lr_ratio`.
        min_lr_ratio: the final learning rate as a share of `lr`.
        grad_clip: the largest global gradient norm; 0: no clipping.
        precision: `fp32`, `bf16` (the forward pass under autocast) or `auto` (bf16 on a GPU that has it,
            else fp32).
        device: `auto` (this process's GPU when there is one, else the CPU), `cpu`, `cuda` or `cuda:N`.
        compile: train through `torch.compile` (the model's forward pass and the losses, one graph).
        strategy: how `torchrun`'s processes share the work: `ddp` (each holds the whole model; gradients
            averaged) or `fsdp` (FSDP2: weights, gradients and optimiser state sharded, one transformer
            block gathered at a time; sharded checkpoints). One process trains alike under both.
        activation_checkpointing: each transformer block (ours, and a Hugging Face model's layers) keeps
            only its input for the backward pass and computes its activations again there: less memory
            (the activations of one block instead of all), about a third more compute.
        peak_tflops: the chip's dense peak TFLOP/s at the training precision, for the MFU figure of the
            log; unset: the table of common GPUs in `training/speed.py` (no MFU on a CPU or an unlisted GPU).
        loggers: where the log's figures and the validations go besides `metrics.jsonl`: any of
            `tensorboard` (`RUN/tensorboard/`) and `wandb` (Weights & Biases; offline without a key).
        wandb: `wandb.init` arguments for the `wandb` logger, e.g. `{project: mine, entity: team, tags: [a]}`.
        seed: the seed of initialisation, data order, augmentation, dropout and task sampling.
        log_every: steps between two lines of `metrics.jsonl`.
        val_every: steps between two validations on `data.val` (0: only at the end).
        ckpt_every: steps between two checkpoints (`checkpoints/step_NNNNNN/`).
        keep_checkpoints: how many of the newest checkpoints to keep.
        eval_batch_size: the batch size of validation.
        init_from: a run folder or model folder whose weights start this run: every tensor whose name
            and shape match is copied, and its tokenizer is used.
        freeze: parameter-name prefixes kept fixed, e.g. `[encoders.image]`.
        modality_dropout: modality → the chance that a training example lacks it, e.g. `{audio: 0.3}`
            (never a modality the task requires, never all of an example's inputs).
        cfg_dropout: classifier-free guidance's share of training examples whose prompt is dropped, for
            every generation task that does not set its own `cfg_dropout` (e.g. `text_to_image`: 0.1).
        progress: show a progress bar while training.
        task_sampling: which tasks train at a step: `all` (every task; tasks on the same records and
            inputs share one batch and one model pass), `round_robin`, `proportional` (one task a step,
            drawn in proportion to its training records) or `temperature` (drawn ∝ n^(1/T)).
        task_temperature: T of `temperature` sampling.
        loss_weighting: how task losses combine: `fixed` (each task's `weight`), `uncertainty` (learnt
            Σ exp(-s_i) L_i + s_i), `pcgrad` (conflicting gradients projected) or `gradnorm`;
            `pcgrad` and `gradnorm` need `task_sampling: all`.
        gradnorm_alpha: GradNorm's asymmetry α.
        lr_mult: parameter-name prefix → learning-rate multiplier, e.g. `{encoders.text: 0.1}`.
        lora: LoRA adapters (peft) on the linear and convolution layers whose whole name matches one of
            `targets` (regular expressions): `{targets: [...], r: 8, alpha: 16, dropout: 0.0, train:
            [prefixes]}`; every other weight is frozen except the task heads and the `train` prefixes; the
            exported model holds the merged weights.
        select: `{metric: TASK/METRIC, mode: max | min}`: export the weights of the best validation.
        early_stop: `{patience: N}`: stop after N validations without improvement of `select`'s metric.
    """

    max_steps: int = 1000
    batch_size: int = 64  # global: per optimiser step, over all processes and accumulation steps
    accumulate: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    precision: str = "auto"  # auto | fp32 | bf16
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    compile: bool = False
    strategy: str = "ddp"  # ddp | fsdp: several processes (torchrun)
    activation_checkpointing: bool = False  # recompute each block's activations in backward
    peak_tflops: float | None = None  # for MFU; unset: from the GPU's name (training/speed.py)
    loggers: list[str] = field(default_factory=list)  # tensorboard | wandb, besides metrics.jsonl
    wandb: dict[str, Any] = field(default_factory=dict)  # wandb.init arguments (project, entity, tags, ...)
    seed: int = 0
    log_every: int = 10
    val_every: int = 0  # 0: only at the end
    ckpt_every: int = 200
    keep_checkpoints: int = 2
    eval_batch_size: int = 256
    init_from: str | None = None  # a run folder or model folder whose matching weights start this run
    freeze: list[str] = field(default_factory=list)  # parameter-name prefixes kept fixed, e.g. encoders.image
    modality_dropout: dict[str, float] = field(default_factory=dict)  # modality → chance a training example lacks it
    cfg_dropout: float | None = None  # generation tasks' prompt dropout (classifier-free guidance) unless they set one
    progress: bool = True
    # multi-task learning (training/multitask.py, training/weighting.py)
    task_sampling: str = "all"  # all | round_robin | proportional | temperature: which tasks train at a step
    task_temperature: float = 2.0  # temperature sampling: task i drawn ∝ n_i^(1/T)
    loss_weighting: str = "fixed"  # fixed | uncertainty | gradnorm | pcgrad
    gradnorm_alpha: float = 1.5  # GradNorm's asymmetry α
    # fine-tuning
    lr_mult: dict[str, float] = field(default_factory=dict)  # parameter-name prefix → learning-rate multiplier
    lora: dict[str, Any] | None = None  # {targets: [regex], r, alpha, dropout, train: [prefixes]} (training/lora.py)
    select: dict[str, str] | None = None  # {metric: TASK/METRIC, mode: max | min}: export the best validation
    early_stop: dict[str, int] | None = None  # {patience: N}: stop after N validations without improvement


@dataclass
class Config:
    """A whole, validated config. `model` and `tasks` stay dicts until the builder binds them."""

    model: dict[str, Any]
    tasks: dict[str, dict[str, Any]]
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    base_dir: Path = field(default_factory=Path.cwd)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain YAML-able values (data paths absolute)."""
        return {
            "model": copy.deepcopy(self.model),
            "tasks": copy.deepcopy(self.tasks),
            "data": dataclasses.asdict(self.data),
            "train": dataclasses.asdict(self.train),
        }


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check `value` against the annotation `tp`; convert int→float and list→tuple where harmless."""
    if tp is inspect.Parameter.empty or tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option, where)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {value!r}")
    if origin in (tuple, list, collections.abc.Sequence) or tp in (tuple, list, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    return value


def bind(target: Callable, values: dict[str, Any], where: str, *, provided: tuple[str, ...] = (),
         elsewhere: tuple[str, ...] = (), hint: str = "") -> dict[str, Any]:
    """Check `values` against the keyword parameters of `target` and return them coerced.

    Args:
        target: a class or function whose signature defines the allowed keys.
        values: the config mapping.
        where: the dotted config path, used in error messages (e.g. `model.encoders.image`).
        provided: parameters the builder fills itself (not settable from the config).
        elsewhere: keys of the same config mapping that the builder reads itself (taken out of `values`
            before): named among the allowed keys when a key is unknown.
        hint: said after the allowed keys when a key is unknown.

    Raises:
        ConfigError: naming the unknown key and the allowed ones, a missing required key, or a bad type.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {values!r}")
    signature = inspect.signature(target)
    hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    params = {
        name: p
        for name, p in signature.parameters.items()
        if name not in provided and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    unknown = [k for k in values if k not in params]
    if unknown:
        allowed = ", ".join(sorted({*params, *elsewhere})) or "(none)"
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed keys: {allowed}{hint}")
    out = {}
    for name, p in params.items():
        if name in values:
            out[name] = _coerce(values[name], hints.get(name, p.annotation), f"{where}.{name}")
        elif p.default is inspect.Parameter.empty:
            raise ConfigError(f"{where}: missing required key {name!r}")
    return out


def _bind_dataclass(cls: type, values: Any, where: str) -> Any:
    if values is None:
        values = {}
    return cls(**bind(cls, values, where))


def parse_value(text: str) -> Any:
    """A `--set` value, parsed as YAML so numbers, booleans, null and lists work (`lr=3e-4`, `x=null`)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:  # YAML 1.1 reads `3e-4` (no dot) as a string
            return float(value)
        except ValueError:
            return value
    return value


# keys holding file paths: in a config file they are relative to the file; given with --set, to the
# directory the command runs in (what a user typing `--set data.train=A.jsonl` means)
PATH_KEYS = ("data.train", "data.val", "data.test", "train.init_from", "model.tokenizer.path", "model.decoder.path",
             "model.encoders.text.path", "model.encoders.image.path", "model.encoders.audio.path",
             "model.encoders.video.path")
PACKAGE_PREFIX = "package:"  # a model folder inside an installed Python package: not a file-system path
SPLITS = ("train", "val", "test")


def is_path_key(path: str) -> bool:
    """Whether the dotted key holds a file path: one of `PATH_KEYS` or a task's `tasks.NAME.data.SPLIT`."""
    keys = path.split(".")
    return path in PATH_KEYS or (len(keys) == 4 and keys[0] == "tasks" and keys[2] == "data" and keys[3] in SPLITS)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> None:
    """Apply `key.path=value` overrides in place; the path must lead to an existing section.

    Relative paths given for `PATH_KEYS` are made absolute against the current directory.
    """
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        path, text = item.split("=", 1)
        keys = path.strip().split(".")
        if keys[0] not in SECTIONS:
            raise ConfigError(f"--set {path}: unknown section {keys[0]!r}; allowed: {', '.join(SECTIONS)}")
        node = raw
        for i, key in enumerate(keys[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {path}: {'.'.join(keys[: i + 1])} is not a mapping")
            node = child
        value = parse_value(text)
        if is_path_key(path.strip()) and isinstance(value, str) and value and not value.startswith(PACKAGE_PREFIX):
            value = os.path.normpath(Path(value).expanduser().absolute())
        node[keys[-1]] = value


def _resolve_path(value: str | None, base: Path) -> str | None:
    if value is None or value.startswith(PACKAGE_PREFIX) or value.startswith("pipe:") or "://" in value:
        return value
    if "::" in value:  # a list of shard patterns
        return "::".join(_resolve_path(part, base) for part in value.split("::"))
    path = Path(value).expanduser()
    # normpath, not resolve: `configs/` may be a symlink and `..` must mean the folder the user sees
    return os.path.normpath(path if path.is_absolute() else base / path)


def from_dict(raw: dict[str, Any], base_dir: Path, where: str = "config") -> Config:
    """Validate a raw config mapping; data paths are resolved relative to `base_dir`."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with sections {', '.join(SECTIONS)}")
    unknown = [k for k in raw if k not in SECTIONS]
    if unknown:
        raise ConfigError(f"{where}: unknown section {unknown[0]!r}; allowed: {', '.join(SECTIONS)}")
    for section in ("model", "tasks"):
        if not isinstance(raw.get(section), dict) or not raw[section]:
            raise ConfigError(f"{where}: section {section!r} is required and must be a mapping")
    tasks = copy.deepcopy(raw["tasks"])
    for name, task in tasks.items():
        if not isinstance(task, dict) or "type" not in task:
            raise ConfigError(f"{where}: tasks.{name}: expected a mapping with a 'type' key")
        if "data" in task:
            task["data"] = _task_data(task["data"], f"tasks.{name}.data", base_dir)
    data = _bind_dataclass(DataConfig, raw.get("data"), "data")
    for split in ("train", "val", "test"):
        setattr(data, split, _resolve_path(getattr(data, split), base_dir))
    if not 0 < data.train_fraction <= 1:
        raise ConfigError(f"data.train_fraction: expected a share above 0 and at most 1, got {data.train_fraction}")
    if isinstance(data.shuffle_buffer, bool) or not isinstance(data.shuffle_buffer, int) or data.shuffle_buffer < 1:
        raise ConfigError(f"data.shuffle_buffer: expected a number of samples (at least 1), got {data.shuffle_buffer!r}")
    if data.on_error not in ("fail", "skip"):
        raise ConfigError(f"data.on_error: expected 'fail' or 'skip', got {data.on_error!r}")
    train = _bind_dataclass(TrainConfig, raw.get("train"), "train")
    if train.precision not in PRECISIONS:
        raise ConfigError(f"train.precision: expected one of {', '.join(PRECISIONS)}, got {train.precision!r}")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", train.device):
        raise ConfigError(f"train.device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {train.device!r}")
    if data.num_workers != "auto" and (not isinstance(data.num_workers, int) or data.num_workers < 0):
        raise ConfigError(f"data.num_workers: expected 'auto' or a number of worker processes, got {data.num_workers!r}")
    for name in train.loggers:
        if name not in LOGGERS:
            raise ConfigError(f"train.loggers: unknown logger {name!r}; expected some of {', '.join(LOGGERS)}")
    if train.strategy not in STRATEGIES:
        raise ConfigError(f"train.strategy: expected one of {', '.join(STRATEGIES)}, got {train.strategy!r}")
    if train.peak_tflops is not None and not train.peak_tflops > 0:
        raise ConfigError(f"train.peak_tflops: expected a positive number of TFLOP/s, got {train.peak_tflops}")
    for key in ("max_steps", "batch_size", "accumulate"):
        if getattr(train, key) < 1:
            raise ConfigError(f"train.{key}: expected a positive integer, got {getattr(train, key)}")
    train.init_from = _resolve_path(train.init_from, base_dir)
    _check_train(train, tasks)
    model = copy.deepcopy(raw["model"])
    decoder = model.get("decoder")
    if isinstance(decoder, dict) and isinstance(decoder.get("path"), str):  # a local HF model folder
        decoder["path"] = _resolve_path(decoder["path"], base_dir)
    for encoder in (model.get("encoders") or {}).values() if isinstance(model.get("encoders"), dict) else ():
        if isinstance(encoder, dict) and isinstance(encoder.get("path"), str):  # a pretrained encoder's folder
            encoder["path"] = _resolve_path(encoder["path"], base_dir)
    return Config(model=model, tasks=tasks, data=data, train=train, base_dir=base_dir)


def _task_data(spec: Any, where: str, base_dir: Path) -> dict[str, str]:
    """A task's own manifests `{train: PATH, val: PATH, test: PATH}`, paths resolved like `data:`'s."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping with keys {', '.join(SPLITS)}, got {spec!r}")
    for key, value in spec.items():
        if key not in SPLITS:
            raise ConfigError(f"{where}: unknown key {key!r}; allowed keys: {', '.join(SPLITS)}")
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}.{key}: expected a manifest path, got {value!r}")
    return {key: _resolve_path(value, base_dir) for key, value in spec.items()}


TASK_SAMPLING = ("all", "round_robin", "proportional", "temperature")
LOSS_WEIGHTING = ("fixed", "uncertainty", "gradnorm", "pcgrad")
LORA_KEYS = {"targets": list, "r": int, "alpha": float, "dropout": float, "train": list}


def _check_train(train: TrainConfig, tasks: dict[str, Any]) -> None:
    """The multi-task and fine-tuning settings: allowed values, named in the error."""
    if train.task_sampling not in TASK_SAMPLING:
        raise ConfigError(f"train.task_sampling: expected one of {', '.join(TASK_SAMPLING)}, "
                          f"got {train.task_sampling!r}")
    if not train.task_temperature > 0:
        raise ConfigError(f"train.task_temperature: expected a positive number, got {train.task_temperature}")
    if train.loss_weighting not in LOSS_WEIGHTING:
        raise ConfigError(f"train.loss_weighting: expected one of {', '.join(LOSS_WEIGHTING)}, "
                          f"got {train.loss_weighting!r}")
    if train.loss_weighting in ("gradnorm", "pcgrad") and train.task_sampling != "all":
        raise ConfigError(f"train.loss_weighting: {train.loss_weighting!r} compares every task's gradient at each "
                          f"step, so it needs train.task_sampling: all (got {train.task_sampling!r})")
    if train.strategy == "fsdp" and train.loss_weighting in ("gradnorm", "pcgrad"):
        raise ConfigError(f"train.loss_weighting: {train.loss_weighting!r} takes each task's gradient of the whole "
                          "model, which train.strategy: fsdp keeps in shards; use train.strategy: ddp with it")
    for prefix, mult in train.lr_mult.items():
        if not isinstance(mult, (int, float)) or isinstance(mult, bool) or mult < 0:
            raise ConfigError(f"train.lr_mult.{prefix}: expected a number at least 0, got {mult!r}")
    if train.lora is not None:
        train.lora = _check_keys(train.lora, "train.lora", LORA_KEYS)
        if not train.lora.get("targets") or not all(isinstance(t, str) for t in train.lora["targets"]):
            raise ConfigError("train.lora.targets: expected a list of module-name patterns (regular expressions), "
                              f"got {train.lora.get('targets')!r}")
        if train.lora.get("r", 8) < 1:
            raise ConfigError(f"train.lora.r: expected a positive integer, got {train.lora['r']}")
        if not 0 <= train.lora.get("dropout", 0.0) < 1:
            raise ConfigError(f"train.lora.dropout: expected a chance from 0 to below 1, got {train.lora['dropout']}")
    if train.select is not None:
        train.select = _check_keys(train.select, "train.select", {"metric": str, "mode": str})
        metric = train.select.get("metric")
        if metric is None or metric.count("/") < 1 or metric.split("/", 1)[0] not in tasks:
            raise ConfigError(f"train.select.metric: expected TASK/METRIC with TASK one of {', '.join(tasks)}, "
                              f"got {metric!r}")
        if train.select.setdefault("mode", "max") not in ("max", "min"):
            raise ConfigError(f"train.select.mode: expected 'max' or 'min', got {train.select['mode']!r}")
    if train.early_stop is not None:
        train.early_stop = _check_keys(train.early_stop, "train.early_stop", {"patience": int})
        if train.early_stop.get("patience", 0) < 1:
            raise ConfigError(f"train.early_stop.patience: expected a positive integer (validations), "
                              f"got {train.early_stop.get('patience')!r}")
        if train.select is None:
            raise ConfigError("train.early_stop: needs train.select (the metric whose improvement it waits for)")


def _check_keys(values: dict[str, Any], where: str, types_: dict[str, type]) -> dict[str, Any]:
    unknown = [k for k in values if k not in types_]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed keys: {', '.join(types_)}")
    return {k: _coerce(v, types_[k], f"{where}.{k}") for k, v in values.items()}


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML config, apply `--set` overrides, validate.

    Raises:
        ConfigError: naming the file and the problem (YAML syntax with line number, unknown key, ...).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{line}: invalid YAML: {getattr(e, 'problem', e)}") from None
    raw = raw or {}
    if overrides:
        apply_overrides(raw, overrides)
    try:
        return from_dict(raw, path.absolute().parent, where=str(path))
    except ConfigError as e:
        msg = str(e)
        raise ConfigError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
