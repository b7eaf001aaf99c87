"""A Hugging Face causal language model as a decoder: loading it (with LoRA), and its decoding session."""

from __future__ import annotations

import inspect
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..layers import positions_from_mask


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
        max_length: its number of positions: a step past it is a clear error (None: not checked).
        new_tokens: None for HF's `DynamicCache`; else HF's `StaticCache`, sized at the prefill for the
            prompt and this many new tokens, with the attention mask kept at that size and written in
            place (no tensor changes shape or address between steps).
        compile: with `new_tokens`, run each step through `torch.compile` (True: `mode="reduce-overhead"`,
            CUDA graphs, on a GPU; a dict: `torch.compile`'s arguments).
    """

    def __init__(self, model: Any, max_length: int | None = None, *, new_tokens: int | None = None,
                 compile: bool | dict = False):
        from transformers import DynamicCache

        self.model, self.max_length, self.new_tokens = model, max_length, new_tokens
        base = model.get_base_model() if hasattr(model, "get_base_model") else model  # (peft)
        self.base = base
        self.names = _forward_names(type(base))  # (looked up once: not in a compiled step)
        if new_tokens is not None and not (getattr(base, "_can_compile_fullgraph", False)
                                           or getattr(base, "_supports_static_cache", False)):
            raise ValueError(f"cache: static: {type(base).__name__} has no static KV cache in transformers "
                             f"(decode it with cache: dynamic)")
        if compile and new_tokens is None:
            raise ValueError("compile: a compiled step needs a static KV cache: give new_tokens")
        self.cache = DynamicCache() if new_tokens is None else None  # a static one is sized at the prefill
        self.mask: torch.Tensor | None = None  # (B, T) every position so far; static: (B, capacity), 1 = written
        self.next_position: torch.Tensor | None = None
        self.filled = 0  # static: positions written
        self._step = self._one_step
        if compile:
            options = compile if isinstance(compile, dict) else {
                "mode": "reduce-overhead" if torch.cuda.is_available() else None}
            self._step = torch.compile(self._one_step, **options)

    def _run(self, **inputs: torch.Tensor) -> torch.Tensor:
        cache_name, keep_name = self.names
        if keep_name:
            inputs[keep_name] = 1
        out = self.model(**inputs, attention_mask=self.mask.long(), use_cache=True, **{cache_name: self.cache})
        if self.new_tokens is None:
            self.cache = out[cache_name] if cache_name in out else out["past_key_values"]
        return out.logits[:, -1]

    def prefill(self, ids: torch.Tensor | None, mask: torch.Tensor | None = None,
                embeds: torch.Tensor | None = None) -> torch.Tensor:
        x = ids if embeds is None else embeds
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if mask is None else mask
        positions = positions_from_mask(mask)
        self.next_position = positions[:, -1] + 1
        self.mask = mask
        if self.new_tokens is not None:
            from transformers import StaticCache

            capacity = x.shape[1] + self.new_tokens
            self.cache = StaticCache(config=self.base.config, max_cache_len=capacity)
            self.mask = torch.cat([mask, mask.new_zeros(mask.shape[0], self.new_tokens)], 1).long()
            self.filled = x.shape[1]
            torch._dynamo.mark_static_address(self.mask)
            torch._dynamo.mark_static_address(self.next_position)
        inputs = {"input_ids": ids} if embeds is None else {"inputs_embeds": embeds}
        return self._run(**inputs, position_ids=positions)

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        # positions count real tokens: a static cache no longer than the model's positions needs no check
        may_pass = self.new_tokens is None or self.max_length is None or self.mask.shape[1] > self.max_length
        if self.max_length is not None and may_pass and int(self.next_position.max()) >= self.max_length:
            raise ValueError(f"generation reached the language model's {self.max_length} positions: "
                             f"lower max_new_tokens or shorten the prompt")
        if self.new_tokens is None:
            self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=1)
        else:
            if self.filled >= self.mask.shape[1]:
                raise ValueError(f"a static cache of {self.mask.shape[1]} positions is full: open the session "
                                 "with more new_tokens")
            self.mask[:, self.filled] = 1  # in place: a compiled step keeps its inputs' addresses
            self.filled += 1
        return self._step(ids.contiguous())

    def _one_step(self, ids: torch.Tensor) -> torch.Tensor:
        logits = self._run(input_ids=ids[:, None], position_ids=self.next_position[:, None])
        if self.new_tokens is None:
            self.next_position = self.next_position + 1
        else:
            self.next_position.add_(1)
        return logits

    def reorder(self, index: torch.Tensor) -> None:
        if self.new_tokens is None:
            self.cache.reorder_cache(index)
            self.mask = self.mask.index_select(0, index)
            self.next_position = self.next_position.index_select(0, index)
            return
        for layer in self.cache.layers:  # in place, so the tensors keep their addresses
            for name in ("keys", "values"):
                kept = getattr(layer, name, None)
                if isinstance(kept, torch.Tensor):
                    kept.copy_(kept.index_select(0, index))
        self.mask.copy_(self.mask.index_select(0, index))
        self.next_position.copy_(self.next_position.index_select(0, index))


class HFLanguageModel(nn.Module):
    """A local Hugging Face causal LM (`AutoModelForCausalLM.from_pretrained(path)`, offline): GPT-2,
    Llama, Qwen2, any model that takes `inputs_embeds`; optionally with LoRA adapters (`peft`).

    Args:
        path: the model folder (config, weights and tokenizer, as `save_pretrained` writes them).
        lora: None, or LoRA settings {r, alpha, dropout, targets}: only the adapters train, the LM's own
            weights stay as loaded. `targets`: module-name patterns (default: peft's choice for the
            architecture, e.g. GPT-2's c_attn, Llama's q_proj and v_proj).
        extra_tokens: ids added after the LM's vocabulary (a tokenizer's codes and media markers that the
            model reads and writes): its input and output embeddings grow by this many rows, the new ones
            drawn like the LM's own, and with LoRA they train beside the adapters.
    """

    def __init__(self, path: str | Path, lora: dict[str, Any] | None = None, extra_tokens: int = 0):
        super().__init__()
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # one small folder read: no progress bar in our output
        self.path = Path(path)
        if not self.path.is_dir():
            raise ValueError(f"path: no Hugging Face model folder at {self.path}")
        try:
            model = AutoModelForCausalLM.from_pretrained(str(self.path), local_files_only=True,
                                                         dtype=torch.float32)
        except (OSError, ValueError) as error:
            raise ValueError(f"path: cannot load a causal LM from {self.path}: {error}") from None
        config = model.config
        self.text_vocab_size = int(config.vocab_size)
        if extra_tokens:
            model.resize_token_embeddings(self.text_vocab_size + extra_tokens, mean_resizing=False)
        self.width = int(config.hidden_size)
        self.vocab_size = self.text_vocab_size + extra_tokens
        self.max_length = int(getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", 0)
                              or 1 << 30)
        if lora is not None:
            model = _with_lora(model, lora, grow=extra_tokens > 0)
        self.model = model

    def input_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(ids)

    def forward(self, ids: torch.Tensor | None, mask: torch.Tensor | None = None, *,
                embeds: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, V) next-token logits; positions count real tokens only (padding anywhere is masked)."""
        x = ids if embeds is None else embeds
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        positions = positions_from_mask(mask)
        if x.shape[1] > self.max_length and int(positions.max()) >= self.max_length:  # no wait when it fits
            raise ValueError(f"a sequence of {int(positions.max()) + 1} positions is longer than the language "
                             f"model's {self.max_length}")
        inputs = {"input_ids": ids} if embeds is None else {"inputs_embeds": embeds}
        return self.model(**inputs, attention_mask=mask.long(), position_ids=positions, use_cache=False).logits

    def session(self, *, new_tokens: int | None = None, compile: bool | dict = False) -> HFSession:
        """A decoding session (see `HFSession` for the static cache and compiled steps)."""
        return HFSession(self.model, self.max_length, new_tokens=new_tokens, compile=compile)


def _with_lora(model: Any, lora: dict[str, Any], grow: bool = False) -> Any:
    """`model` with LoRA adapters on the chosen linear layers (peft); everything else frozen but, when
    its vocabulary grew (`grow`), its embeddings and output layer (the new ids have nothing to adapt)."""
    from peft import LoraConfig, get_peft_model

    unknown = set(lora) - {"r", "alpha", "dropout", "targets"}
    if unknown:
        raise ValueError(f"lora: unknown key {sorted(unknown)[0]!r}; allowed keys: alpha, dropout, r, targets")
    r = int(lora.get("r", 8))
    try:
        config = LoraConfig(r=r, lora_alpha=float(lora.get("alpha", 2 * r)), lora_dropout=float(lora.get("dropout", 0.0)),
                            target_modules=lora.get("targets"), task_type="CAUSAL_LM",
                            # GPT-2's Conv1D layers store (in, out) weights
                            fan_in_fan_out=getattr(model.config, "model_type", "") == "gpt2",
                            modules_to_save=_embedding_names(model) if grow else None,
                            **({"ensure_weight_tying": True} if grow and model.config.tie_word_embeddings else {}))
        return get_peft_model(model, config)
    except ValueError as error:
        raise ValueError(f"lora: {error}") from None


def _embedding_names(model: Any) -> list[str]:
    """The module names of `model`'s input embedding and output layer (peft trains them in full)."""
    wanted = {id(model.get_input_embeddings()), id(model.get_output_embeddings())}
    return [name.rsplit(".", 1)[-1] for name, module in model.named_modules() if id(module) in wanted]
