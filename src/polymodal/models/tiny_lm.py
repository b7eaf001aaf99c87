"""A tiny random Hugging Face causal LM saved to a folder, with a tokenizer learnt from a manifest's text:
what a user's own LLM folder looks like (`save_pretrained`), to try the decoder-only path offline
(`polymodal tiny-lm`) and to test it. Its weights are random: it learns the language from the task."""

from __future__ import annotations

from pathlib import Path

from ..modalities.text.tokenizer import TextTokenizer

KINDS = ("gpt2", "llama")


def save_tiny_lm(folder: Path, kind: str, texts: list[str], *, width: int = 32, layers: int = 2,
                 vocab_size: int = 200, max_positions: int = 128, seed: int = 0) -> Path:
    """A `kind` ("gpt2" or "llama") causal LM and its tokenizer (WordPiece learnt from `texts`), in `folder`."""
    import torch
    import transformers

    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    ours = TextTokenizer.train(texts, vocab_size=vocab_size)
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=ours.tokenizer, bos_token="[CLS]",
                                                     eos_token="[SEP]", pad_token="[PAD]", unk_token="[UNK]")
    ids = dict(vocab_size=ours.vocab_size, bos_token_id=ours.cls_id, eos_token_id=ours.sep_id,
               pad_token_id=ours.pad_id)
    torch.manual_seed(seed)
    if kind == "gpt2":
        config = transformers.GPT2Config(n_embd=width, n_layer=layers, n_head=max(width // 16, 1),
                                         n_positions=max_positions, **ids)
        model = transformers.GPT2LMHeadModel(config)
    else:
        config = transformers.LlamaConfig(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers,
                                          num_attention_heads=max(width // 8, 1), num_key_value_heads=max(width // 16, 1),
                                          max_position_embeddings=max_positions, **ids)
        model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
