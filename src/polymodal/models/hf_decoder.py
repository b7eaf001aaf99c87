"""A Hugging Face causal language model as a decoder: its decoding session for `generation`."""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any

import torch


@lru_cache(maxsize=None)
def _forward_names(model_class: type) -> tuple[str, str | None]:
    """What this model's `forward` calls its cache and its keep-only-the-last-logits arguments: transformers
    5 says `cache` and `logits_to_keep`, 4.x `past_key_values` and `num_logits_to_keep` (or neither)."""
    names = inspect.signature(model_class.forward).parameters
    cache = "cache" if "cache" in names else "past_key_values"
    keep = next((n for n in ("logits_to_keep", "num_logits_to_keep") if n in names), None)
    return cache, keep


class HFSession:
    """One batch being decoded by a HF causal LM (`AutoModelForCausalLM`), with its own KV cache.

    Positions count real tokens only (a left-padded prompt starts at 0 where its text starts), as HF
    `generate` does, so the same prompts give the same tokens.

    Args:
        model: the causal LM.
    """

    def __init__(self, model: Any):
        from transformers import DynamicCache

        self.model = model
        self.cache = DynamicCache()
        self.mask: torch.Tensor | None = None  # (B, T) every position so far
        self.next_position: torch.Tensor | None = None

    def _run(self, **inputs: torch.Tensor) -> torch.Tensor:
        cache_name, keep_name = _forward_names(type(self.model))
        if keep_name:
            inputs[keep_name] = 1
        out = self.model(**inputs, attention_mask=self.mask.long(), use_cache=True, **{cache_name: self.cache})
        self.cache = out[cache_name] if cache_name in out else out["past_key_values"]
        return out.logits[:, -1]

    def prefill(self, ids: torch.Tensor | None, mask: torch.Tensor | None = None,
                embeds: torch.Tensor | None = None) -> torch.Tensor:
        batch, length = (ids if embeds is None else embeds).shape[:2]
        device = (ids if embeds is None else embeds).device
        self.mask = torch.ones(batch, length, dtype=torch.bool, device=device) if mask is None else mask
        positions = (self.mask.long().cumsum(1) - 1).masked_fill(~self.mask, 1)
        self.next_position = positions[:, -1] + 1
        if embeds is None:
            return self._run(input_ids=ids, position_ids=positions)
        return self._run(inputs_embeds=embeds, position_ids=positions)

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=1)
        logits = self._run(input_ids=ids[:, None], position_ids=self.next_position[:, None])
        self.next_position = self.next_position + 1
        return logits

    def reorder(self, index: torch.Tensor) -> None:
        self.cache.reorder_cache(index)
        self.mask = self.mask.index_select(0, index)
        self.next_position = self.next_position.index_select(0, index)
