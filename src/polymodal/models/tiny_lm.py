"""A tiny random Hugging Face causal LM saved to a folder, with a tokenizer learnt from a manifest's text:
what a user's own LLM folder looks like (`save_pretrained`), to try the decoder-only path offline
(`polymodal tiny-lm`) and to test it. Its weights are random, or pre-trained a few hundred steps on the
same text (`pretrain_steps`) so that it knows the language before a multimodal model learns to talk to it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..modalities.text.tokenizer import TextTokenizer

KINDS = ("gpt2", "llama")


def save_tiny_lm(folder: Path, kind: str, texts: list[str], *, width: int = 32, layers: int = 2,
                 vocab_size: int = 200, max_positions: int = 128, seed: int = 0, pretrain_steps: int = 0,
                 log: Any = None) -> Path:
    """A `kind` ("gpt2" or "llama") causal LM and its tokenizer (WordPiece learnt from `texts`), in `folder`.

    `pretrain_steps` > 0: generative pre-training on `texts` first (docs/concepts.md#pre-training; next-token loss,
    batches of
    64, AdamW), so the LM knows their language before a multimodal model learns to talk to it."""
    import torch
    import transformers
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
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
    if pretrain_steps:
        _pretrain(model, ours, texts, pretrain_steps, seed, log or (lambda _: None))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _pretrain(model: Any, tokenizer: TextTokenizer, texts: list[str], steps: int, seed: int, log: Any) -> None:
    """Causal-LM training on `[start] text [end]` sequences: the loss on every real next token."""
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    model.train()
    for step in range(1, steps + 1):
        batch = [texts[i] for i in torch.randint(len(texts), (64,), generator=generator).tolist()]
        ids, mask = tokenizer.encode_batch(batch, 48)  # [CLS] text [SEP], right-padded
        logits = model(input_ids=ids, attention_mask=mask.long()).logits[:, :-1]
        labels = ids[:, 1:].masked_fill(~mask[:, 1:], -100)
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == steps:
            log(f"pre-training step {step}/{steps}  loss {loss.item():.4f}")
    model.eval()
