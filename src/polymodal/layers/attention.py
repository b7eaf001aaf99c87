"""Multi-head attention (docs/concepts.md#math-attention), self and cross, on `F.scaled_dot_product_attention`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@contextmanager
def keeping_attention_weights(module: nn.Module) -> Iterator[None]:
    """Within the block, every `MultiHeadAttention` under `module` keeps its last attention weights."""
    layers = [m for m in module.modules() if isinstance(m, MultiHeadAttention)]
    for layer in layers:
        layer.keep_weights = True
    try:
        yield
    finally:
        for layer in layers:
            layer.keep_weights = False


@dataclass
class KVCache:
    """The keys and values one attention layer has seen, so a decoder can run one token at a time.

    Self-attention appends each call's keys and values (a prefill of the prompt, then one token per
    step); cross-attention projects its context once, at the first call, and reuses it. Heads are split:
    k and v are (B, heads, T, head_dim); `mask` is (B, T) bool, True for real tokens (None: all real), so a
    left-padded batch of prompts keeps its padding masked at every step.
    """

    k: torch.Tensor | None = None
    v: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    @property
    def length(self) -> int:
        """T, the number of positions held."""
        return 0 if self.k is None else self.k.shape[2]

    def append(self, k: torch.Tensor, v: torch.Tensor,
               mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Add the new positions' keys, values and key mask; returns everything held."""
        if self.k is None:
            if mask is not None and mask.device.type == "cpu" and not torch.compiler.is_compiling() and \
                    bool(mask.all()):
                mask = None  # no padding: no mask to carry (and to grow) at every step
            self.k, self.v, self.mask = k, v, mask
            return k, v, mask
        if k.shape[0] != self.k.shape[0]:
            raise ValueError(f"a cache of batch {self.k.shape[0]} got keys of batch {k.shape[0]}")
        if mask is not None or self.mask is not None:
            old = self.mask if self.mask is not None else self.k.new_ones(self.k.shape[0], self.length, dtype=torch.bool)
            new = mask if mask is not None else k.new_ones(k.shape[0], k.shape[2], dtype=torch.bool)
            self.mask = torch.cat([old, new], dim=1)
        self.k, self.v = torch.cat([self.k, k], dim=2), torch.cat([self.v, v], dim=2)
        return self.k, self.v, self.mask

    def select(self, index: torch.Tensor) -> None:
        """Keep the batch rows `index` (B',) long, in that order (beam search follows its beams' parents)."""
        if self.k is not None:
            self.k, self.v = self.k.index_select(0, index), self.v.index_select(0, index)
        if self.mask is not None:
            self.mask = self.mask.index_select(0, index)


class StaticKVCache(KVCache):
    """A `KVCache` of fixed capacity (gpt-fast's static cache): the buffers are allocated by the first
    call (the prompt's prefill) for `capacity` positions and each later call writes into them in place,
    so a decoding step has the same shapes and tensor addresses every time and compiles once (with CUDA
    graphs under `torch.compile(mode="reduce-overhead")`). Keys not written yet are masked out, which
    also makes a step causal by itself.

    Args:
        capacity: the most positions it holds (prompt plus new tokens).
    """

    static = True

    def __init__(self, capacity: int):
        super().__init__()
        if capacity < 1:
            raise ValueError(f"capacity: expected at least 1 position, got {capacity}")
        self.capacity = capacity
        self.filled = 0  # positions written, counted on the host by eager calls (the prefill)
        self.prefilled = False  # after the first call, each call is one step
        self.position: torch.Tensor | None = None  # () long: where the next keys go

    @property
    def length(self) -> int:
        return self.filled

    def append(self, k: torch.Tensor, v: torch.Tensor,
               mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        batch, heads, new, dim = k.shape
        if self.k is None:
            self.k = k.new_zeros(batch, heads, self.capacity, dim)  # (B, heads, C, head_dim)
            self.v = v.new_zeros(batch, heads, self.capacity, dim)
            self.mask = torch.zeros(batch, self.capacity, dtype=torch.bool, device=k.device)  # (B, C)
            self.position = torch.zeros((), dtype=torch.long, device=k.device)
            for buffer in (self.k, self.v, self.mask, self.position):
                torch._dynamo.mark_static_address(buffer)  # CUDA graphs may keep their addresses
        if not torch.compiler.is_compiling() and self.filled + new > self.capacity:
            raise ValueError(f"a static cache of {self.capacity} positions is full ({self.filled} held, "
                             f"{new} more given): open the session with a larger max_length")
        index = self.position + torch.arange(new, device=k.device)  # (N,)
        self.k.index_copy_(2, index, k)
        self.v.index_copy_(2, index, v)
        self.mask.index_copy_(1, index, mask if mask is not None else index.new_ones(batch, new, dtype=torch.bool))
        self.position.add_(new)
        if not torch.compiler.is_compiling():  # a compiled step would recompile for each new count
            self.filled += new
        self.prefilled = True
        return self.k, self.v, self.mask

    def select(self, index: torch.Tensor) -> None:
        if self.k is not None:  # in place: the addresses stay
            self.k.copy_(self.k.index_select(0, index))
            self.v.copy_(self.v.index_select(0, index))
            self.mask.copy_(self.mask.index_select(0, index))


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention.

    Self-attention when `context_dim` is None: queries, keys and values all come from `x` through one
    fused projection `qkv` whose weight is laid out like `nn.MultiheadAttention.in_proj_weight`
    (q, k, v stacked on dim 0). Cross-attention when `context_dim` is given: queries come from `x`
    through `q`, keys and values from `context` through `kv` (k, v stacked).

    Args:
        dim: width of `x` and of the output; split into `num_heads` heads.
        num_heads: number of heads; must divide `dim`.
        context_dim: width of `context` for cross-attention; None for self-attention.
        dropout: dropout on the attention weights, applied only in training mode.
        bias: whether the projections have biases.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        context_dim: int | None = None,
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.context_dim = context_dim
        self.dropout = dropout
        if context_dim is None:
            self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        else:
            self.q = nn.Linear(dim, dim, bias=bias)
            self.kv = nn.Linear(context_dim, 2 * dim, bias=bias)
        self.out = nn.Linear(dim, dim, bias=bias)
        # keep_weights: compute the attention weights explicitly and keep the last ones in `last_weights`
        # (B, heads, N, M), for pictures of where a model looked; the outputs are the same as SDPA's
        self.keep_weights = False
        self.last_weights: torch.Tensor | None = None

    @property
    def is_cross(self) -> bool:
        """True when this module attends from `x` to a separate `context`."""
        return self.context_dim is not None

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        *,
        mask: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        causal: bool = False,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Attend from `x` to itself (self-attention) or to `context` (cross-attention).

        Args:
            x: (B, N, dim) queries (and keys/values for self-attention).
            context: (B, M, context_dim) keys/values; required for cross-attention, None otherwise
                (and, once a cache holds it, may be None).
            mask: (B, N) bool key mask for self-attention, True for real tokens.
            context_mask: (B, M) bool key mask for cross-attention, True for real tokens.
            causal: query i attends only to keys j <= i (top-left aligned when N != M); with a cache
                holding P earlier positions, the new query i is position P + i and sees keys j <= P + i.
            cache: the layer's `KVCache`: self-attention adds this call's keys and values to it and
                attends to all it holds; cross-attention fills it with the context's on the first call.

        Returns:
            (B, N, dim).
        """
        offset = 0
        if self.is_cross:
            if mask is not None:
                raise ValueError("cross-attention masks keys with context_mask=, not mask=")
            q = self._split_heads(self.q(x))  # (B, heads, N, head_dim)
            if cache is not None and cache.k is not None:
                k, v, key_mask = cache.k, cache.v, cache.mask
            else:
                if context is None:
                    raise ValueError("cross-attention needs a context tensor (B, M, context_dim)")
                k, v = (self._split_heads(t) for t in self.kv(context).chunk(2, dim=-1))  # (B, heads, M, head_dim)
                key_mask = context_mask
                if cache is not None:
                    cache.append(k, v, key_mask)
        else:
            if context is not None or context_mask is not None:
                raise ValueError("self-attention takes no context; build with context_dim= for cross-attention")
            q, k, v = (self._split_heads(t) for t in self.qkv(x).chunk(3, dim=-1))  # (B, heads, N, head_dim)
            key_mask = mask
            if cache is not None:
                offset = cache.length
                if getattr(cache, "static", False) and cache.prefilled:  # a step into a static cache: keys
                    if q.shape[2] > 1:  # not written yet are masked, and that mask is causal enough
                        raise ValueError("a static KV cache takes one new position per call after the prefill")
                    causal, offset = False, 0
                k, v, key_mask = cache.append(k, v, mask)  # (B, heads, P + N, head_dim)

        if causal and q.shape[2] == 1 and offset == k.shape[2] - 1:
            causal = False  # one query, the newest position: it sees every key (a decoding step)
        attn_mask = _attention_mask(key_mask, causal, q.shape[2], k.shape[2], q.device, offset=offset)
        if self.keep_weights:
            y = self._attend_keeping_weights(q, k, v, attn_mask, causal)
        else:
            y = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=attn_mask,
                dropout_p=self.dropout if self.training else 0.0,
                is_causal=causal and attn_mask is None,
            )  # (B, heads, N, head_dim)
        batch, _, length, _ = y.shape
        y = y.transpose(1, 2).reshape(batch, length, self.dim)  # (B, N, dim)
        return self.out(y)

    def _attend_keeping_weights(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                attn_mask: torch.Tensor | None, causal: bool) -> torch.Tensor:
        """softmax(q kᵀ / √d) v written out (no dropout: for inspection), keeping the weights."""
        scores = q @ k.transpose(-2, -1) / self.head_dim ** 0.5  # (B, heads, N, M)
        if attn_mask is None and causal:
            attn_mask = torch.ones(q.shape[2], k.shape[2], dtype=torch.bool, device=q.device).tril()
        if attn_mask is not None:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        weights = scores.softmax(dim=-1)
        self.last_weights = weights.detach()
        return weights @ v

    def _split_heads(self, t: torch.Tensor) -> torch.Tensor:
        batch, length, _ = t.shape
        return t.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)  # (B, heads, T, head_dim)


def _attention_mask(
    key_mask: torch.Tensor | None, causal: bool, num_queries: int, num_keys: int, device: torch.device,
    *, offset: int = 0,
) -> torch.Tensor | None:
    """Boolean SDPA mask (True = may attend), or None when SDPA's own `is_causal` suffices.

    With `offset` P (positions already in a KV cache), query i is position P + i: causally it sees keys
    j <= P + i, which SDPA's `is_causal` (aligned top-left) does not express, so the mask is built.

    A query whose every key is masked has a softmax over nothing. Some SDPA kernels return 0 for it,
    others have returned NaN (pytorch/pytorch#103963, #109517), and a NaN poisons gradients even where
    it is later multiplied by zero. Such a query belongs to padding (or to an example with no real
    tokens), so its output is never used: we let it attend to every key, which is finite on every
    backend and leaves every other row exactly as it was.
    """
    if key_mask is None:
        if not (causal and offset):
            return None
        return torch.ones(num_queries, num_keys, dtype=torch.bool, device=device).tril(diagonal=offset)
    if key_mask.dtype != torch.bool:
        # SDPA would add a float or int mask to the scores instead of masking: silently wrong.
        raise ValueError(f"attention masks must be bool (True = real token), got {key_mask.dtype}")
    # No padding: let SDPA take its unmasked (faster) kernels. Only on the CPU and in eager mode: on a GPU
    # reading the answer waits for the device (a host sync per layer), and under torch.compile it would
    # break the graph; there the mask is kept, which gives the same numbers.
    if key_mask.device.type == "cpu" and not torch.compiler.is_compiling() and bool(key_mask.all()):
        return _attention_mask(None, causal, num_queries, num_keys, device, offset=offset)
    allowed = key_mask[:, None, None, :]  # (B, 1, 1, M)
    if causal:
        lower = torch.ones(num_queries, num_keys, dtype=torch.bool, device=device).tril(diagonal=offset)  # (N, M)
        allowed = allowed & lower  # (B, 1, N, M)
    return allowed | ~allowed.any(dim=-1, keepdim=True)


@torch.no_grad()
def load_torch_mha_(attn: MultiHeadAttention, mha: nn.MultiheadAttention) -> None:
    """Copy the weights of a `torch.nn.MultiheadAttention` into `attn`, in place.

    Args:
        attn: destination; its dims, heads and bias setting must match `mha`.
        mha: source; for cross-attention it must be built with `kdim=vdim=context_dim`.
    """
    if mha.bias_k is not None:
        raise ValueError("nn.MultiheadAttention with add_bias_kv=True has no counterpart here")
    if (mha.embed_dim, mha.num_heads) != (attn.dim, attn.num_heads):
        raise ValueError(
            f"shape mismatch: nn.MultiheadAttention(embed_dim={mha.embed_dim}, num_heads={mha.num_heads}) "
            f"vs MultiHeadAttention(dim={attn.dim}, num_heads={attn.num_heads})"
        )
    if (mha.in_proj_bias is None) != (attn.out.bias is None):
        raise ValueError("bias mismatch: build MultiHeadAttention with the same bias= as nn.MultiheadAttention")
    dim = attn.dim
    if attn.is_cross:
        if mha.kdim != attn.context_dim or mha.vdim != attn.context_dim:
            raise ValueError(f"nn.MultiheadAttention kdim={mha.kdim}, vdim={mha.vdim}; expected {attn.context_dim}")
        if mha._qkv_same_embed_dim:
            q_w, k_w, v_w = mha.in_proj_weight.chunk(3, dim=0)  # (dim, dim) each
        else:
            q_w, k_w, v_w = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
        attn.q.weight.copy_(q_w)
        attn.kv.weight.copy_(torch.cat([k_w, v_w], dim=0))  # (2 * dim, context_dim)
        if mha.in_proj_bias is not None:
            attn.q.bias.copy_(mha.in_proj_bias[:dim])
            attn.kv.bias.copy_(mha.in_proj_bias[dim:])
    else:
        if not mha._qkv_same_embed_dim:
            raise ValueError("self-attention needs nn.MultiheadAttention with kdim == vdim == embed_dim")
        attn.qkv.weight.copy_(mha.in_proj_weight)
        if mha.in_proj_bias is not None:
            attn.qkv.bias.copy_(mha.in_proj_bias)
    attn.out.weight.copy_(mha.out_proj.weight)
    if mha.out_proj.bias is not None:
        attn.out.bias.copy_(mha.out_proj.bias)
