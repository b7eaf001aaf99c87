"""The decoder-only multimodal language model (LLaVA-style): each modality's tokens go through a projector
into the language model's width and take their place in its input sequence, behind a marker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .splice import splice


@dataclass(frozen=True)
class MediaVocabulary:
    """The ids a discrete modality (a tokenizer's codes) takes in a language model's vocabulary: a begin
    and an end marker, then `count` codes from `first` (Chameleon's and Emu3's layout: the text
    vocabulary first, then each tokenizer's)."""

    begin: int
    end: int
    first: int
    count: int
    length: int  # the codes of one item (a tokenizer's grid, in raster order)

    def ids(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, N) codes → (B, N + 2) ids: the begin marker, the codes' ids, the end marker."""
        edge = codes.new_full((codes.shape[0], 1), self.begin)
        return torch.cat([edge, codes + self.first, edge + (self.end - self.begin)], 1)


BOTH_WAYS = ("a decoder that attends both ways, Polymodal's own (model.decoder: {type: transformer}); a Hugging "
             "Face causal LM attends only backwards")


def media_vocabularies(text_vocab_size: int, codes: dict[str, tuple[int, int]]) -> dict[str, MediaVocabulary]:
    """Modality → its ids after a text vocabulary of `text_vocab_size`, from modality → (number of codes,
    codes per item), in modality-name order."""
    out, base = {}, text_vocab_size
    for name in sorted(codes):
        count, length = codes[name]
        out[name] = MediaVocabulary(begin=base, end=base + 1, first=base + 2, count=count, length=length)
        base += count + 2
    return out


def projector(kind: str, width: int, lm_width: int) -> nn.Module:
    """Modality tokens (…, width) → (…, lm_width): "linear", or "mlp" (Linear, GELU, Linear; LLaVA-1.5)."""
    if kind == "linear":
        return nn.Linear(width, lm_width)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(width, lm_width), nn.GELU(), nn.Linear(lm_width, lm_width))
    raise ValueError(f"projector: expected linear or mlp, got {kind!r}")


class MultimodalLM(nn.Module):
    """A causal language model reading media in its input sequence, and writing discrete media.

    A prompt's media placeholders (`splice.media_id`) become the example's projected modality tokens,
    each span behind its modality's learned marker vector (docs/concepts.md#math-input). A discrete
    modality (a trained tokenizer's codes, `codes`) is read and written as ids of the language model's
    own vocabulary instead: `[begin] code ids [end]` (`MediaVocabulary`), the same embeddings whether the
    model reads the image or draws it (docs/concepts.md#tokenizers). Training reads the logits at the
    text positions; generation prefills the spliced prompt and then decodes tokens.

    Args:
        lm: the language model (`HFLanguageModel`, or anything with `input_embeddings`, `forward(ids, mask,
            embeds=)`, `session()`, `width`, `vocab_size`, `max_length`).
        modalities: the modalities it reads.
        width: D, the modality encoders' width.
        projector: "linear" or "mlp".
        codes: discrete modality → (its tokenizer's number of codes, codes per item); the language model's
            vocabulary holds them after its text ids (`vocab_size` = text ids + Σ (codes + 2)).
    """

    reads_memory = False  # it reads `ModelOutput.modalities`, not a cross-attention memory

    def __init__(self, lm: nn.Module, modalities: list[str], width: int, *, projector_type: str = "mlp",
                 codes: dict[str, tuple[int, int]] | None = None):
        super().__init__()
        self.lm = lm
        self.vocab_size, self.max_length = lm.vocab_size, lm.max_length
        extra = sum(count + 2 for count, _ in (codes or {}).values())
        self.text_vocab_size = lm.vocab_size - extra
        self.media = media_vocabularies(self.text_vocab_size, codes or {})
        projected = sorted(m for m in modalities if m not in self.media)
        self.projectors = nn.ModuleDict({m: projector(projector_type, width, lm.width) for m in projected})
        self.markers = nn.ParameterDict({m: nn.Parameter(torch.randn(lm.width) * 0.02) for m in projected})

    def spans(self, out: Any) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Modality → (B, 1 + N, lm width) its marker and projected tokens, with their mask; a discrete
        modality's (B, N + 2) `[begin] codes [end]` embeddings."""
        spans = {}
        for name, enc in out.modalities.items():
            if name in self.media:
                ids = self.media[name].ids(enc.codes)
                spans[name] = (self.lm.input_embeddings(ids), torch.ones_like(ids, dtype=torch.bool))
                continue
            tokens = self.projectors[name](enc.tokens)  # (B, N, W)
            marker = self.markers[name].to(tokens.dtype).expand(tokens.shape[0], 1, -1)
            real = torch.ones(tokens.shape[0], 1, dtype=torch.bool, device=tokens.device)
            spans[name] = (torch.cat([marker, tokens], 1), torch.cat([real, enc.mask], 1))
        return spans

    def _check(self, mask: torch.Tensor) -> None:
        if mask.shape[1] <= self.max_length:  # known without looking at the data (nor waiting for it)
            return
        longest = int(mask.sum(1).max())
        if longest > self.max_length:
            raise ValueError(f"a sequence of {longest} positions (media spans and text) is longer than the "
                             f"language model's {self.max_length}: shorten the prompt or the answers "
                             f"(tasks.*.max_length), or use fewer media tokens")

    def next_logits(self, out: Any, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L, V): at each position of the right-padded prompt-and-answer ids, the logits of the next id
        (at a media placeholder: read at the last vector of its span)."""
        embeds, emask, last = splice(ids, mask, self.lm.input_embeddings, self.spans(out))
        self._check(emask)
        logits = self.lm(None, emask, embeds=embeds)  # (B, T, V)
        return logits.gather(1, last[:, :, None].expand(-1, -1, logits.shape[-1]))

    @property
    def attends_both_ways(self) -> bool:
        """Whether its language model reads a sequence both ways on request (masked-token decoding)."""
        return bool(getattr(self.lm, "attends_both_ways", False))

    def position_logits(self, out: Any, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L, V): at each position of the right-padded ids, the logits of the id that belongs there, read
        with attention both ways (a masked-token model: MaskGIT-style parallel decoding of media codes);
        needs a language model that allows it (`attends_both_ways`: Polymodal's own decoder)."""
        if not self.attends_both_ways:
            raise ValueError(f"parallel decoding needs {BOTH_WAYS}")
        embeds, emask, last = splice(ids, mask, self.lm.input_embeddings, self.spans(out))
        self._check(emask)
        logits = self.lm(None, emask, embeds=embeds, causal=False)  # (B, T, V)
        return logits.gather(1, last[:, :, None].expand(-1, -1, logits.shape[-1]))

    def start(self, out: Any, repeat: int = 1, **options: Any) -> MultimodalSession:
        """A decoding session over `out`'s media, each row repeated `repeat` times; `options`: the language
        model's `session` keywords (`GenerationSettings.session_options`: a static cache, compiled steps)."""
        spans = self.spans(out)
        if repeat > 1:
            spans = {m: (t.repeat_interleave(repeat, 0), k.repeat_interleave(repeat, 0)) for m, (t, k) in spans.items()}
        return MultimodalSession(self, spans, **options)


class MultimodalSession:
    """Decoding with a `MultimodalLM`: the prefill splices the media into the prompt, then text steps."""

    def __init__(self, model: MultimodalLM, spans: dict[str, tuple[torch.Tensor, torch.Tensor]], **options: Any):
        self.model, self.spans = model, spans
        self.inner = model.lm.session(**options)

    def prefill(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = torch.ones_like(ids, dtype=torch.bool) if mask is None else mask
        embeds, emask, _ = splice(ids, mask, self.model.lm.input_embeddings, self.spans, left=True)
        self.model._check(emask)
        return self.inner.prefill(None, emask, embeds=embeds)

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        return self.inner.step(ids)

    def reorder(self, index: torch.Tensor) -> None:
        self.inner.reorder(index)
