"""AdamW with decay / no-decay groups, and linear warm-up + cosine decay."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError

NO_DECAY_NAMES = ("positions", "cls", "marker", "logit_scale", "type_embed")


def param_groups(model: nn.Module, weight_decay: float, lr_mult: dict[str, float] | None = None) -> list[dict]:
    """Weight decay on matrices only: biases, norms, positions, special tokens and temperatures are exempt.

    `lr_mult`: parameter-name prefix → learning-rate multiplier (the longest matching prefix wins); each
    multiplier gets its own decay / no-decay pair after the first pair (multiplier 1). Every group carries
    its `lr_mult`, which the trainer applies on top of the schedule.
    """
    names = [name for name, _ in model.named_parameters()]
    mult_of: dict[str, float] = {}
    for prefix, mult in sorted((lr_mult or {}).items(), key=lambda item: len(item[0])):
        mult_of.update(dict.fromkeys(under_prefix(names, prefix, f"train.lr_mult.{prefix}"), float(mult)))
    groups: dict[tuple[float, bool], list] = {(1.0, True): [], (1.0, False): []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exempt = p.ndim < 2 or any(key in name for key in NO_DECAY_NAMES)
        groups.setdefault((mult_of.get(name, 1.0), not exempt), []).append(p)
    return [{"params": params, "weight_decay": weight_decay if decay else 0.0, "lr_mult": mult}
            for (mult, decay), params in groups.items() if params or mult == 1.0]


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, lr_mult: dict[str, float] | None = None,
                   extra: list[nn.Parameter] | None = None, fused: bool = False) -> torch.optim.AdamW:
    """AdamW over `model`'s trainable parameters; `extra` (learnt loss weights) in a group of their own,
    without decay; `fused` (on a GPU): one kernel for the whole update."""
    groups = param_groups(model, weight_decay, lr_mult)
    if extra:
        groups.append({"params": list(extra), "weight_decay": 0.0, "lr_mult": 1.0})
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6, fused=fused or None)


def lr_at(step: int, *, lr: float, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    """Learning rate for optimiser step `step` (0-based): linear warm-up, then cosine to lr × min_lr_ratio."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * cosine)


def under_prefix(names: list[str], prefix: str, where: str) -> list[str]:
    """The parameter names under `prefix` (`encoders.image` or `backbone.encoders.image`: whole dotted
    components, so `encoders.imag` is no prefix). Raises ConfigError naming the modules when none is."""
    heads = (f"{prefix}.", f"backbone.{prefix}.")
    matched = [n for n in names if n.startswith(heads)]
    if not matched:
        tops = sorted({".".join(n.split(".")[:3]) for n in names})
        raise ConfigError(f"{where}: {prefix!r} matches no parameter; modules: {', '.join(tops)}")
    return matched


def trainable_summary(model: nn.Module) -> str:
    """`trainable 12,345 of 456,789 parameters (2.7%)` (adapters count among the model's parameters)."""
    total = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return f"trainable {trained:,} of {total:,} parameters ({100 * trained / max(total, 1):.1f}%)"
