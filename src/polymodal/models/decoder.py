"""The text decoder (docs/concepts.md#math-decoder-cross-attention): causal self-attention with a KV cache, optional
cross-attention to a
multimodal memory, tied input and output embeddings; and its decoding session for `generation`."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..layers import LearnedPositions, TransformerEncoder, init_weights_, positions_from_mask
from ..layers.positions import check_position_ids
from ..layers.attention import StaticKVCache
from ..layers.transformer import BlockCache
from .splice import splice


class TextDecoder(nn.Module):
    """Token embedding + learned positions + causal pre-norm transformer + an LM head.

    GPT-2's layout: with `activation="gelu_tanh"` and `context_dim=None` it holds exactly GPT-2's weights
    (`models.gpt2.decoder_from_gpt2`). With `context_dim`, every block also cross-attends to a memory:
    the encoders' tokens or a fusion's output (docs/concepts.md#math-decoder-cross-attention: "in the decoder layers,
    cross-attention lets the
    decoder attend to the encoder's several modalities").

    Args:
        vocab_size: V, the number of token ids.
        width: the decoder's width.
        depth: number of blocks.
        num_heads: attention heads (must divide `width`).
        max_length: the most positions (prompt and generated tokens together).
        context_dim: width of the memory to cross-attend to; None for a plain language model.
        mlp_ratio: MLP hidden width as a multiple of `width`.
        dropout: dropout on embeddings and inside the blocks.
        activation: "gelu" or "gelu_tanh".
        tie_embeddings: the output projection is the input embedding, transposed (no separate LM head).
        gated_cross: each block's cross-attention passes through a tanh gate starting at 0 (Flamingo), so a
            pre-trained language model starts out unchanged by the memory.
        init_std: the standard deviation of the initial weights (linear layers and embeddings). GPT-2's
            0.02 was chosen for a width of 768; a narrow decoder learns faster from about 1/sqrt(width)
            (width 64: 0.125; generative VQA on the built-in data learns its spatial questions only then).
    """

    def __init__(self, *, vocab_size: int, width: int = 128, depth: int = 2, num_heads: int = 4,
                 max_length: int = 64, context_dim: int | None = None, mlp_ratio: float = 4.0,
                 dropout: float = 0.0, activation: str = "gelu", tie_embeddings: bool = True,
                 gated_cross: bool = False, init_std: float = 0.02) -> None:
        super().__init__()
        self.vocab_size, self.width, self.max_length = vocab_size, width, max_length
        self.embed = nn.Embedding(vocab_size, width)
        self.positions = LearnedPositions(width, max_length)
        self.drop = nn.Dropout(dropout)
        self.stack = TransformerEncoder(width, depth, num_heads, mlp_ratio=mlp_ratio, dropout=dropout,
                                        context_dim=context_dim, activation=activation, gated_cross=gated_cross)
        self.lm_head = None if tie_embeddings else nn.Linear(width, vocab_size, bias=False)
        if not init_std > 0:
            raise ValueError(f"init_std: expected a positive number, got {init_std}")
        init_weights_(self, std=init_std)

    attends_both_ways = True  # `forward(causal=False)` is allowed (parallel decoding of media codes)
    reads_memory = True  # a model with this decoder gives it `ModelOutput.memory` to cross-attend to

    @property
    def cross_attends(self) -> bool:
        return self.stack.blocks[0].cross is not None if len(self.stack.blocks) else False

    def next_logits(self, out, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L, V): at each position of the (right-padded) ids, the logits of the id after it, over the
        memory of the model output `out`. Media placeholders vanish: media come in by cross-attention."""
        embeds, emask, last = splice(ids, mask, self.embed)
        memory = out.memory if self.cross_attends else None
        logits = self(None, emask, embeds=embeds, context=None if memory is None else memory.tokens,
                      context_mask=None if memory is None else memory.mask)  # (B, T, V)
        return logits.gather(1, last[:, :, None].expand(-1, -1, logits.shape[-1]))

    def start(self, out, repeat: int = 1, **options: Any) -> DecoderSession:
        """A decoding session over the model output `out`'s memory, each row repeated `repeat` times;
        `options`: `session`'s keywords (`GenerationSettings.session_options`)."""
        memory = out.memory if self.cross_attends else None
        return self.session(None if memory is None else memory.tokens, None if memory is None else memory.mask,
                            repeat, **options)

    def forward(self, ids: torch.Tensor | None, mask: torch.Tensor | None = None, *,
                embeds: torch.Tensor | None = None, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                cache: list[BlockCache] | None = None, causal: bool = True, last_only: bool = False) -> torch.Tensor:
        """Next-token logits at every position (with `causal=False`: each position's logits over the whole
        sequence, as a masked-token model reads them; MaskGIT-style parallel decoding).

        Args:
            ids: (B, N) token ids, or None when `embeds` gives the inputs.
            mask: (B, N) bool, True for real tokens (padding, left or right, is never attended to).
            embeds: (B, N, width) input vectors in place of `ids` (media spans of a multimodal LM).
            context: (B, M, context_dim) memory, for a decoder built with `context_dim`.
            context_mask: (B, M) bool, True for real memory tokens.
            position_ids: (B, N) positions; by default counted over the real tokens of `mask`.
            cache: `stack.new_cache()` when decoding step by step; `ids` then holds the new positions.
            causal: each position sees only those before it (a language model); False: all of them.
            last_only: the last position's logits alone, (B, 1, V) (a prefill needs no others: at batch 16
                of 64-token prompts the vocabulary projection of every position was 6% of a generate call).

        Returns:
            (B, N, V) logits.
        """
        x = self.embed(ids) if embeds is None else embeds  # (B, N, width)
        below = None  # a bound on the positions known from shapes: then nothing waits for the device
        if position_ids is None:
            position_ids, below = positions_from_mask(mask, x.shape[1], x.device), x.shape[1]
        try:
            check_position_ids(position_ids, below, self.max_length)
        except ValueError:
            raise ValueError(f"position {int(position_ids.max())} is past the decoder's max_length="
                             f"{self.max_length}: shorten the prompt or max_new_tokens, or raise max_length") from None
        x = self.drop(x + self.positions.at(position_ids, below=self.max_length))  # checked just above
        x = self.stack(x, mask, context=context, context_mask=context_mask, causal=causal, cache=cache)
        return self.logits(x[:, -1:] if last_only else x)

    def input_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        """(…) ids → (…, width) input vectors (before positions)."""
        return self.embed(ids)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, N, width) final hidden states → (B, N, V) logits, through the tied embedding or the head."""
        return hidden @ self.embed.weight.T if self.lm_head is None else self.lm_head(hidden)

    def session(self, context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None,
                repeat: int = 1, *, max_length: int | None = None, new_tokens: int | None = None,
                compile: bool | dict = False) -> DecoderSession:
        """A decoding session (see `generation.Decoding`) over a memory whose rows are each repeated
        `repeat` times (once per beam).

        Args:
            max_length: the most positions a row will hold (prompt plus new tokens): a static KV cache of
                that size, allocated once, rather than one that grows by concatenation.
            new_tokens: instead of `max_length`, the tokens to make room for after the prompt (a static
                cache sized at the prefill).
            compile: with a static cache, run each step through `torch.compile` (True: on a GPU with CUDA
                graphs, `mode="reduce-overhead"`; a dict: `torch.compile`'s arguments). The tokens are
                the eager ones.
        """
        if context is not None and repeat > 1:
            context = context.repeat_interleave(repeat, dim=0)
            context_mask = None if context_mask is None else context_mask.repeat_interleave(repeat, dim=0)
        if compile and max_length is None and new_tokens is None:
            raise ValueError("compile: a compiled step needs a static KV cache: give max_length or new_tokens")
        return DecoderSession(self, context, context_mask, max_length=max_length, new_tokens=new_tokens,
                              compile=compile)


class DecoderSession:
    """One batch being decoded by a `TextDecoder`: its KV cache, its memory, each row's next position."""

    def __init__(self, decoder: TextDecoder, context: torch.Tensor | None, context_mask: torch.Tensor | None,
                 *, max_length: int | None = None, new_tokens: int | None = None, compile: bool | dict = False):
        if decoder.cross_attends and context is None:
            raise ValueError("this decoder cross-attends to a memory: give context=")
        self.decoder, self.context, self.context_mask = decoder, context, context_mask
        self.cache = decoder.stack.new_cache()
        self.next_position: torch.Tensor | None = None  # (B,)
        self.new_tokens = new_tokens
        self.max_length, self.room = max_length, None  # with a static cache: positions left after the prefill
        self._step = self._one_step
        if compile:
            options = compile if isinstance(compile, dict) else {
                "mode": "reduce-overhead" if torch.cuda.is_available() else None}
            self._step = torch.compile(self._one_step, **options)

    def prefill(self, ids: torch.Tensor, mask: torch.Tensor | None = None,
                embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Run the (left-padded) prompts `ids` (B, T); returns the last position's logits (B, V). Media
        placeholders in `ids` vanish (this decoder reads media by cross-attention)."""
        if self.next_position is not None:
            raise RuntimeError("prefill runs once per session")
        if embeds is None:
            mask = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask
            embeds, mask, _ = splice(ids, mask, self.decoder.embed, left=True)
        if self.max_length is None and self.new_tokens is not None:
            self.max_length = embeds.shape[1] + self.new_tokens
        if self.max_length is not None:
            for block in self.cache:
                block.attn = StaticKVCache(self.max_length)
        positions = positions_from_mask(mask)  # (B, T)
        logits = self.decoder(None, mask, embeds=embeds, context=self.context, context_mask=self.context_mask,
                              position_ids=positions, cache=self.cache, last_only=True)
        self.next_position = positions[:, -1] + 1
        torch._dynamo.mark_static_address(self.next_position)
        if self.max_length is not None:
            self.room = self.max_length - embeds.shape[1]
        return logits[:, -1]

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        """Feed one new token per row, `ids` (B,); returns the logits for the next one (B, V)."""
        if self.room is not None:  # counted here: a compiled step cannot check it
            if self.room < 1:
                raise ValueError(f"a static cache of {self.max_length} positions is full: open the session "
                                 "with a larger max_length")
            self.room -= 1
        return self._step(ids.contiguous())  # one layout: a compiled step is not traced again for another

    def _one_step(self, ids: torch.Tensor) -> torch.Tensor:
        logits = self.decoder(ids[:, None], position_ids=self.next_position[:, None], cache=self.cache)
        self.next_position.add_(1)  # in place: a compiled step keeps its inputs' addresses
        return logits[:, -1]

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows `index` (beam search's parents), in that order."""
        for block in self.cache:
            block.select(index)
        self.next_position.copy_(self.next_position.index_select(0, index))  # in place, as the cache
