"""Pre-norm transformer blocks and encoder stacks, optionally with cross-attention to a context."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import KVCache, MultiHeadAttention

ACTIVATIONS = {"gelu": "none", "gelu_tanh": "tanh"}  # name → nn.GELU's `approximate`


@dataclass
class BlockCache:
    """What one block keeps between decoding steps: its self-attention's keys and values, and its
    cross-attention's projected context."""

    attn: KVCache = field(default_factory=KVCache)
    cross: KVCache = field(default_factory=KVCache)

    def select(self, index: torch.Tensor) -> None:
        """Keep the batch rows `index` (B',) long, in that order."""
        self.attn.select(index)
        self.cross.select(index)


class TransformerBlock(nn.Module):
    """Pre-norm block: self-attention, optional cross-attention, MLP, each with a residual.

    x = x + attn(ln1(x)); x = x + cross(ln_c(x), context) when built with `context_dim`;
    x = x + mlp(ln2(x)).

    Args:
        dim: token width.
        num_heads: attention heads (must divide `dim`).
        mlp_ratio: MLP hidden width as a multiple of `dim`.
        dropout: dropout on attention weights, attention outputs and MLP output.
        context_dim: width of the cross-attention context; None for no cross-attention.
        activation: the MLP's nonlinearity: "gelu" (exact) or "gelu_tanh" (the tanh approximation
            GPT-2 uses).
        gated_cross: the cross-attention's output passes through a learned tanh gate that starts at 0
            (Flamingo): the block starts as if it had no cross-attention.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        context_dim: int | None = None,
        activation: str = "gelu",
        gated_cross: bool = False,
    ) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, num_heads, dropout=dropout)
        if context_dim is not None:
            self.ln_c = nn.LayerNorm(dim)
            self.cross = MultiHeadAttention(dim, num_heads, context_dim=context_dim, dropout=dropout)
            if gated_cross:
                self.cross_gate = nn.Parameter(torch.zeros(1))
        else:
            self.cross = None
        self.ln2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r}: expected one of {', '.join(ACTIVATIONS)}")
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate=ACTIVATIONS[activation]),
                                 nn.Linear(hidden, dim), nn.Dropout(dropout))
        self.drop = nn.Dropout(dropout)

    # what other modules call besides forward (FSDP gathers the block's weights around each: training/sharding.py)
    ENTRY_POINTS = ("without_context", "normed")
    checkpointed = False  # train.activation_checkpointing: keep only the block's input, recompute the rest in backward

    def _maybe_checkpointed(self, fn, *args):
        """`fn(*args)`, under activation checkpointing when the block is `checkpointed` and training."""
        if self.checkpointed and self.training and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        causal: bool = False,
        cache: BlockCache | None = None,
    ) -> torch.Tensor:
        """Apply the block.

        Args:
            x: (B, N, dim).
            mask: (B, N) bool, True for real tokens; padding is never attended to.
            context: (B, M, context_dim); required iff built with `context_dim` (once a cache holds
                it, it may be left out).
            context_mask: (B, M) bool, True for real context tokens.
            causal: self-attention is causal (token t sees tokens <= t).
            cache: this block's `BlockCache` when decoding step by step: `x` holds the new positions.

        Returns:
            (B, N, dim).
        """
        if cache is not None:  # decoding: nothing to train
            return self._forward(x, mask, context, context_mask, causal, cache)
        return self._maybe_checkpointed(self._forward, x, mask, context, context_mask, causal, None)

    def _forward(self, x: torch.Tensor, mask: torch.Tensor | None, context: torch.Tensor | None,
                 context_mask: torch.Tensor | None, causal: bool, cache: BlockCache | None) -> torch.Tensor:
        self_cache, cross_cache = (None, None) if cache is None else (cache.attn, cache.cross)
        x = x + self.drop(self.attn(self.ln1(x), mask=mask, causal=causal, cache=self_cache))
        if self.cross is not None:
            if context is None and (cross_cache is None or cross_cache.k is None):
                raise ValueError("this block has cross-attention and needs context=")
            crossed = self.drop(self.cross(self.ln_c(x), context, context_mask=context_mask, cache=cross_cache))
            x = x + (torch.tanh(self.cross_gate) * crossed if hasattr(self, "cross_gate") else crossed)
        elif context is not None or context_mask is not None:
            raise ValueError("context given to a block built without context_dim")
        return x + self.mlp(self.ln2(x))

    def without_context(self, x: torch.Tensor, mask: torch.Tensor | None = None, *, causal: bool = False) -> torch.Tensor:
        """Self-attention and MLP only, skipping any cross-attention (a layer with nothing to attend to)."""
        return self._maybe_checkpointed(self._without_context, x, mask, causal)

    def _without_context(self, x: torch.Tensor, mask: torch.Tensor | None, causal: bool) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), mask=mask, causal=causal))
        return x + self.mlp(self.ln2(x))

    def normed(self, x: torch.Tensor) -> torch.Tensor:
        """The input as the self-attention reads it (`ln1(x)`), for a module that attends to it from outside."""
        return self.ln1(x)


class TransformerEncoder(nn.Module):
    """A stack of `TransformerBlock`s followed by a final LayerNorm.

    Args:
        dim: token width.
        depth: number of blocks.
        num_heads: attention heads per block.
        mlp_ratio: MLP hidden width as a multiple of `dim`.
        dropout: dropout inside each block.
        context_dim: when given, every block cross-attends to a context of this width.
        activation: the blocks' MLP nonlinearity (see `TransformerBlock`).
        gated_cross: tanh-gated cross-attention in every block (see `TransformerBlock`).
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        *,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        context_dim: int | None = None,
        activation: str = "gelu",
        gated_cross: bool = False,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, num_heads, mlp_ratio=mlp_ratio, dropout=dropout, context_dim=context_dim,
                             activation=activation, gated_cross=gated_cross)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        causal: bool = False,
        cache: list[BlockCache] | None = None,
    ) -> torch.Tensor:
        """Run every block, then the final norm.

        Args:
            x: (B, N, dim).
            mask: (B, N) bool, True for real tokens.
            context: (B, M, context_dim) when built with `context_dim`.
            context_mask: (B, M) bool, True for real context tokens.
            causal: causal self-attention in every block.
            cache: one `BlockCache` per block (`new_cache()`), when decoding step by step.

        Returns:
            (B, N, dim).
        """
        if cache is not None and len(cache) != len(self.blocks):
            raise ValueError(f"a cache of {len(cache)} blocks for a stack of {len(self.blocks)}")
        for i, block in enumerate(self.blocks):
            x = block(x, mask, context=context, context_mask=context_mask, causal=causal,
                      cache=None if cache is None else cache[i])
        return self.norm(x)

    def new_cache(self) -> list[BlockCache]:
        """An empty cache for step-by-step decoding through this stack."""
        return [BlockCache() for _ in self.blocks]


@torch.no_grad()
def init_weights_(module: nn.Module, std: float = 0.02) -> None:
    """Initialise `module` and all its submodules in place, GPT/BERT style.

    Linear and Embedding weights ~ N(0, std), biases 0 (an Embedding's padding row stays 0);
    LayerNorm weight 1, bias 0. Other modules (convolutions, raw parameters) are left as they are.

    Args:
        module: root of the tree to initialise.
        std: the weights' standard deviation (GPT-2's and BERT's 0.02, chosen for widths of 768).
    """
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=std)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.Embedding) and m.padding_idx is not None:
            m.weight[m.padding_idx].zero_()
        if isinstance(m, nn.LayerNorm):
            if m.weight is not None:
                nn.init.ones_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
