"""GPT-2's weights in a Polymodal `TextDecoder` (for parity with Hugging Face, and to start from them)."""

from __future__ import annotations

from typing import Any

from .decoder import TextDecoder


def decoder_from_gpt2(model: Any) -> TextDecoder:
    """A `TextDecoder` holding a Hugging Face `GPT2LMHeadModel`'s weights, in fp32.

    GPT-2 is a pre-norm causal transformer with learned positions, a tanh-approximated GELU and tied
    embeddings: our decoder's layout with `activation="gelu_tanh"`. Its `Conv1D` layers store weights as
    (in, out), the transpose of `nn.Linear`'s.
    """
    config = model.config
    if getattr(config, "model_type", None) != "gpt2":
        raise ValueError(f"expected a GPT-2 model, got model_type={getattr(config, 'model_type', None)!r}")
    if getattr(config, "activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"GPT-2 with activation_function={config.activation_function!r} has no counterpart here")
    if getattr(config, "scale_attn_by_inverse_layer_idx", False) or getattr(config, "reorder_and_upcast_attn", False):
        raise ValueError("GPT-2 variants that rescale attention per layer have no counterpart here")
    hidden = config.n_inner or 4 * config.n_embd
    decoder = TextDecoder(vocab_size=config.vocab_size, width=config.n_embd, depth=config.n_layer,
                          num_heads=config.n_head, max_length=config.n_positions, mlp_ratio=hidden / config.n_embd,
                          activation="gelu_tanh", tie_embeddings=True)
    source = {k.removeprefix("transformer."): v.float() for k, v in model.state_dict().items()}
    mapped = {"embed.weight": source["wte.weight"], "positions.weight": source["wpe.weight"],
              "stack.norm.weight": source["ln_f.weight"], "stack.norm.bias": source["ln_f.bias"]}
    for i in range(config.n_layer):
        ours, theirs = f"stack.blocks.{i}.", f"h.{i}."
        for a, b in (("ln1", "ln_1"), ("ln2", "ln_2")):
            mapped[ours + a + ".weight"] = source[theirs + b + ".weight"]
            mapped[ours + a + ".bias"] = source[theirs + b + ".bias"]
        for a, b in (("attn.qkv", "attn.c_attn"), ("attn.out", "attn.c_proj"), ("mlp.0", "mlp.c_fc"),
                     ("mlp.2", "mlp.c_proj")):
            # Conv1D stores (in, out): the transpose of nn.Linear's (out, in)
            mapped[ours + a + ".weight"] = source[theirs + b + ".weight"].T.contiguous()
            mapped[ours + a + ".bias"] = source[theirs + b + ".bias"]
    decoder.load_state_dict(mapped, strict=True)
    return decoder.eval()
