"""The text decoder `model.decoder` describes: ours (encoder-decoder or decoder-only) or a local Hugging
Face causal LM (decoder-only), with the tokenizer of the text it writes."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..config import bind
from ..errors import ConfigError
from ..models.backbone import MEMORIES
from ..models.decoder import TextDecoder
from ..models.hf_decoder import HFLanguageModel
from ..models.multimodal_lm import MultimodalLM
from ..modalities.text.tokenizer import TextTokenizer
from .errors import config_errors

WHERE = "model.decoder"
DECODERS = ("transformer", "hf")  # model.decoder.type: ours, or a local Hugging Face causal LM
ARCHITECTURES = ("encoder_decoder", "decoder_only")
OWN_KEYS = ("type", "memory", "architecture", "projector")  # read here, not by the decoder's constructor


def build_decoder(spec: Any, width: int, modalities: list[str], tokenizer: TextTokenizer | None,
                  codes: dict[str, tuple[int, int]] | None = None) -> tuple[nn.Module, str, TextTokenizer]:
    """The decoder, what its memory is (`Backbone.memory`), and the tokenizer of the text it writes.

    `type: transformer` is ours, cross-attending to a memory of width `width` (`architecture:
    encoder_decoder`, docs/concepts.md#math-decoder-cross-attention) or reading projected media in its input sequence
    (`decoder_only`);
    `type: hf` is a local Hugging Face causal LM (`path`), always decoder-only, with its own tokenizer.
    `codes`: the discrete modalities (trained tokenizers' encoders) → (number of codes, codes per item): a
    decoder-only model's vocabulary grows by them and their begin/end markers, so it reads and writes them.
    """
    if not isinstance(spec, dict):
        raise ConfigError(f"{WHERE}: expected a mapping with a type ({', '.join(DECODERS)}), got {spec!r}")
    kind, memory = spec.get("type"), spec.get("memory", "modalities")
    if kind not in DECODERS:
        raise ConfigError(f"{WHERE}.type: expected one of {', '.join(DECODERS)}, got {kind!r}")
    if memory not in MEMORIES:
        raise ConfigError(f"{WHERE}.memory: expected one of {', '.join(MEMORIES)}, got {memory!r}")
    architecture = spec.get("architecture", "decoder_only" if kind == "hf" else "encoder_decoder")
    if architecture not in ARCHITECTURES or (kind == "hf" and architecture != "decoder_only"):
        allowed = "decoder_only" if kind == "hf" else ", ".join(ARCHITECTURES)
        raise ConfigError(f"{WHERE}.architecture: expected {allowed} for type {kind!r}, got {architecture!r}")
    projector = spec.get("projector", "mlp")
    if architecture == "encoder_decoder" and projector != "mlp":
        raise ConfigError(f"{WHERE}.projector: only a decoder-only model projects media into its sequence")
    settings = {k: v for k, v in spec.items() if k not in OWN_KEYS}
    codes = codes if architecture == "decoder_only" else {}
    extra = sum(count + 2 for count, _ in (codes or {}).values())
    with config_errors(WHERE):
        if kind == "hf":
            lm = HFLanguageModel(**bind(HFLanguageModel, settings, WHERE, provided=("extra_tokens",),
                                        elsewhere=OWN_KEYS), extra_tokens=extra)
            tokenizer = TextTokenizer.from_hf(lm.path)
        else:
            context = width if architecture == "encoder_decoder" else None
            lm = TextDecoder(**bind(TextDecoder, settings, WHERE, provided=("vocab_size", "context_dim"),
                                    elsewhere=OWN_KEYS), vocab_size=tokenizer.vocab_size + extra, context_dim=context)
            if architecture == "encoder_decoder":
                return lm, memory, tokenizer
        return MultimodalLM(lm, modalities, width, projector_type=projector, codes=codes), memory, tokenizer
