"""The contract every registered fusion keeps (timm-style, over `FUSIONS`): shapes, no NaN, padding and
batch independence, every parameter learns; plus each strategy's own defining property."""

from __future__ import annotations

import math

import pytest
import torch
from graphs import graph_breaks

from polymodal.fusion import FUSIONS, CoAttentionFusion, CrossAttentionFusion, GatedCrossAttentionFusion
from polymodal.fusion.base import ExplainsTokens, Fusion
from polymodal.modalities.base import EncoderOutput

D = 16
POSITIONAL = {"pooling": "positional", "max_length": 12, "readout_dim": 3}
# every registered fusion under its own name, plus the settings that change its structure
OPTIONS = {"early": {"depth": 2, "num_heads": 2},
           "early-positional": {"depth": 2, "num_heads": 2, "max_length": 24, "pooling": "positional"},
           "late": {}, "late-scores": {"combine": "scores"}, "late-streams": {"depth": 1, "num_heads": 2},
           "late-positional": {"depth": 1, "num_heads": 2, **POSITIONAL},
           "cross": {"depth": 2, "num_heads": 2}, "cross-positional": {"depth": 2, "num_heads": 2, **POSITIONAL},
           "coattn": {"depth": 2, "num_heads": 2}, "coattn-positional": {"depth": 1, "num_heads": 2, **POSITIONAL},
           "gated_cross_attention": {"target": "text", "depth": 2, "num_heads": 2}, "gated_sum": {},
           "perceiver": {"num_latents": 4, "depth": 2, "num_heads": 2}}
VARIANTS = sorted(OPTIONS)


def build(variant: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return FUSIONS[variant.split("-")[0]](["image", "text"], D, **OPTIONS[variant]).eval()


def test_every_registered_fusion_is_covered():
    assert set(FUSIONS) <= set(OPTIONS)


@pytest.mark.parametrize("name", VARIANTS)
def test_the_fusion_protocol_says_what_the_output_has(name):
    """`gives_tokens` is declared (no default to fall back on) and true exactly when the output has a token
    sequence; a fusion that explains its tokens gives each modality a relevance per token."""
    fusion = build(name)
    assert isinstance(fusion, Fusion) and isinstance(fusion.gives_tokens, bool)
    out = fusion(encoded())
    assert (out.tokens is not None) == fusion.gives_tokens
    if isinstance(fusion, ExplainsTokens):
        relevance = fusion.token_relevance(encoded())
        sizes = {"image": (3, 5), "text": (3, 4)}
        assert relevance and {m: r.shape for m, r in relevance.items()} == {m: sizes[m] for m in relevance}


@pytest.mark.parametrize("name", VARIANTS)
def test_a_training_forward_traces_into_one_graph(name):
    """`train.compile` gets the whole fusion in one graph: no data-dependent check on the masks."""
    assert graph_breaks(build(name).train(), encoded()) == []


def encoded(batch: int = 3, seed: int = 0) -> dict[str, EncoderOutput]:
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, 5, D, generator=g)
    text = torch.randn(batch, 4, D, generator=g)
    text_mask = torch.ones(batch, 4, dtype=torch.bool)
    text_mask[0, 2:] = False  # a shorter text
    return {"image": EncoderOutput(image, torch.ones(batch, 5, dtype=torch.bool), image.mean(1)),
            "text": EncoderOutput(text, text_mask, text[:, 0])}


def pad(out: EncoderOutput, extra: int) -> EncoderOutput:
    """The same output with `extra` padded tokens of large values appended."""
    batch = out.tokens.shape[0]
    return EncoderOutput(torch.cat([out.tokens, 1e3 * torch.randn(batch, extra, D)], dim=1),
                         torch.cat([out.mask, torch.zeros(batch, extra, dtype=torch.bool)], dim=1), out.pooled)


@pytest.mark.parametrize("name", VARIANTS)
def test_shapes_and_finite(name):
    out = build(name)(encoded())
    assert out.pooled.shape == (3, D) and torch.isfinite(out.pooled).all()
    if out.tokens is not None:
        assert out.tokens.shape[:2] == out.mask.shape and out.tokens.shape[0] == 3
        assert torch.isfinite(out.tokens).all()


@pytest.mark.parametrize("name", VARIANTS)
def test_padding_changes_nothing(name):
    fusion, inputs = build(name), encoded()
    padded = {"image": inputs["image"], "text": pad(inputs["text"], 3)}
    torch.testing.assert_close(fusion(padded).pooled, fusion(inputs).pooled, atol=1e-5, rtol=1e-4)


def alone(out: EncoderOutput, i: int) -> EncoderOutput:
    """Example i as a batch of one, without the padding the batch gave it."""
    n = int(out.mask[i].sum())
    return EncoderOutput(out.tokens[i:i + 1, :n], out.mask[i:i + 1, :n], out.pooled[i:i + 1])


@pytest.mark.parametrize("name", VARIANTS)
def test_each_example_is_fused_as_if_alone(name):
    fusion, inputs = build(name), encoded()
    together = fusion(inputs).pooled
    for i in range(3):
        single = {m: alone(o, i) for m, o in inputs.items()}
        torch.testing.assert_close(together[i], fusion(single).pooled[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", [v for v in VARIANTS if not v.startswith("coattn")])  # co-attention pairs exactly two
def test_padding_inside_the_sequence_changes_nothing(name):
    # sorted, "text" sits between "image" and "video": its padding is inside an early-fused sequence
    torch.manual_seed(0)
    fusion = FUSIONS[name.split("-")[0]](["image", "text", "video"], D, **OPTIONS[name]).eval()
    video = torch.randn(3, 6, D)
    inputs = {**encoded(), "video": EncoderOutput(video, torch.ones(3, 6, dtype=torch.bool), video.mean(1))}
    together = fusion(inputs).pooled
    single = {m: alone(o, 0) for m, o in inputs.items()}  # example 0 has the shorter text
    torch.testing.assert_close(together[0], fusion(single).pooled[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", VARIANTS)
def test_every_parameter_learns(name):
    fusion = build(name).train()
    with torch.no_grad():  # open the gates that start shut (gated cross-attention), or nothing flows through them
        for pname, p in fusion.named_parameters():
            if pname.endswith("gate"):
                p.fill_(0.5)
    if not list(fusion.parameters()):
        pytest.skip("no parameters of its own (score-level fusion averages what the task head scores)")
    inputs = encoded()
    out = fusion(inputs)
    loss = out.pooled.pow(2).sum() + (out.tokens.pow(2).mean() if out.tokens is not None else 0)
    loss.backward()
    for pname, p in fusion.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", VARIANTS)
def test_the_output_depends_on_every_modality(name):
    fusion = build(name)
    with torch.no_grad():
        for pname, p in fusion.named_parameters():
            if pname.endswith("gate"):
                p.fill_(0.5)
    inputs, other = encoded(seed=0), encoded(seed=1)
    base = fusion(inputs).pooled
    for modality in inputs:
        changed = fusion({**inputs, modality: other[modality]}).pooled
        assert (changed - base).abs().max() > 1e-4, modality


def attention_by_hand(attn, queries: torch.Tensor, keys: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """CrossAttention(Q, K, V = K) of docs/concepts.md#math-attention written out for one example: softmax(q kᵀ / √d)
    v per head."""
    d, heads = attn.dim, attn.num_heads
    q = queries @ attn.q.weight.T + attn.q.bias  # (N, d)
    k = keys @ attn.kv.weight[:d].T + attn.kv.bias[:d]  # (M, d)
    v = keys @ attn.kv.weight[d:].T + attn.kv.bias[d:]
    h = d // heads
    out = []
    for i in range(heads):
        qi, ki, vi = q[:, i * h:(i + 1) * h], k[:, i * h:(i + 1) * h], v[:, i * h:(i + 1) * h]
        scores = (qi @ ki.T) / math.sqrt(h)
        scores = scores.masked_fill(~key_mask[None, :], float("-inf"))
        out.append(scores.softmax(-1) @ vi)
    return torch.cat(out, dim=-1) @ attn.out.weight.T + attn.out.bias


def test_cross_attention_fusion_is_the_seed_formula_in_both_directions():
    # one layer: O^A = X^A + SelfAttn(X^A); O^{A→B} = CrossAttention(O^A, X^B, X^B); then the MLP
    torch.manual_seed(0)
    fusion = CrossAttentionFusion(["image", "text"], D, depth=1, num_heads=2).eval()
    inputs = encoded(batch=1)
    with torch.no_grad():
        tokens, masks = fusion.starts(inputs)
        layer = fusion.blocks[0]
        for a, b in (("image", "text"), ("text", "image")):  # A→B and B→A
            block = layer[a]
            x_a, x_b = tokens[a][0], layer[b].ln1(tokens[b])[0]
            o_a = x_a + block.attn(block.ln1(tokens[a]), mask=masks[a])[0]
            o_ab = o_a + attention_by_hand(block.cross, block.ln_c(o_a), x_b, masks[b][0])
            expected = o_ab + block.mlp(block.ln2(o_ab))
            streams = fusion(inputs).streams
            torch.testing.assert_close(streams[a].tokens[0], fusion.readout.norm(expected), atol=1e-5, rtol=1e-4)


def test_coattention_swaps_keys_and_values_between_the_two_streams():
    # a' = a + Attn_a(q = LN(a), kv = LN(b)); b' = b + Attn_b(q = LN(b), kv = LN(a)); then each stream's MLP
    torch.manual_seed(0)
    fusion = CoAttentionFusion(["image", "text"], D, depth=1, num_heads=2).eval()
    with torch.no_grad():
        tokens, masks = fusion.starts(encoded(batch=1))
        co = fusion.co[0]
        got = co(tokens, masks)
        for a, b in (("image", "text"), ("text", "image")):
            query, keys = co.norm[a](tokens[a])[0], co.norm[b](tokens[b])[0]
            mixed = tokens[a][0] + attention_by_hand(co.attend[a], query, keys, masks[b][0])
            expected = mixed + co.mlp[a](co.mlp_norm[a](mixed))
            torch.testing.assert_close(got[a][0], expected, atol=1e-5, rtol=1e-4)


def test_cross_attends_only_at_the_chosen_layers():
    fusion = CrossAttentionFusion(["image", "text"], D, depth=4, layers=[1, 3], num_heads=2)
    assert [layer["text"].cross is not None for layer in fusion.blocks] == [True, False, True, False]
    with pytest.raises(ValueError, match="layers: expected layer numbers from 1 to depth=4"):
        CrossAttentionFusion(["image", "text"], D, depth=4, layers=[5])


def test_gated_fusion_starts_as_the_unimodal_stream():
    torch.manual_seed(0)
    fusion = GatedCrossAttentionFusion(["image", "text"], D, target="text", depth=2, num_heads=2).eval()
    inputs, other = encoded(seed=0), encoded(seed=1)
    start = fusion(inputs).pooled
    torch.testing.assert_close(fusion({**inputs, "image": other["image"]}).pooled, start)  # the gates are shut
    torch.testing.assert_close(fusion({"text": inputs["text"]}).pooled, start)  # the same as text alone


@pytest.mark.parametrize("name", ["perceiver", "early", "late", "late-positional", "cross", "cross-positional"])
def test_any_subset_of_modalities_fuses(name):
    fusion, inputs = build(name), encoded()
    for modality in inputs:
        out = fusion({modality: inputs[modality]})
        assert out.pooled.shape == (3, D) and torch.isfinite(out.pooled).all()


@pytest.mark.parametrize("name", sorted(n for n, cls in FUSIONS.items() if hasattr(cls, "token_relevance")))
def test_token_relevance_covers_the_tokens_and_never_padding(name):
    fusion, inputs = build(name), encoded()
    relevance = fusion.token_relevance(inputs)
    assert relevance and set(relevance) <= set(inputs)
    for modality, r in relevance.items():
        assert r.shape == inputs[modality].mask.shape, modality
        assert (r >= 0).all() and r.sum() > 0
    if "text" in relevance:  # example 0's text has two padded tokens
        assert relevance["text"][0, 2:].abs().max() == 0
    # the rollout of early fusion is the CLS row of a product of row-stochastic matrices: it sums to 1
    if name == "early":
        total = sum(r.sum(dim=1) for r in relevance.values())
        assert (total <= 1 + 1e-5).all()


def test_late_fusion_has_no_token_attention_and_early_needs_a_layer():
    assert not hasattr(FUSIONS["late"], "token_relevance")
    with pytest.raises(ValueError, match="depth 0 has no attention to roll out"):
        FUSIONS["early"](["image", "text"], D, depth=0).token_relevance(encoded())


def test_late_streams_never_see_each_other():
    """Late fusion with streams: a modality's own vector depends on its tokens alone."""
    fusion, inputs, other = build("late-positional"), encoded(seed=0), encoded(seed=1)
    base = fusion(inputs).streams
    changed = fusion({**inputs, "image": other["image"]}).streams
    torch.testing.assert_close(changed["text"].pooled, base["text"].pooled)
    assert (changed["image"].pooled - base["image"].pooled).abs().max() > 1e-4


def test_a_positional_readout_knows_where_a_token_is():
    """Swapping two image tokens changes a positional readout, but not a CLS readout without positions."""
    inputs = encoded()
    image = inputs["image"]
    swapped = EncoderOutput(image.tokens[:, [1, 0, 2, 3, 4]], image.mask, image.pooled)
    for variant, moves in (("late-positional", True), ("late-streams", False)):
        fusion = build(variant)
        base, after = fusion(inputs).pooled, fusion({**inputs, "image": swapped}).pooled
        assert ((after - base).abs().max() > 1e-4) == moves, variant


def test_a_stream_longer_than_the_positional_readout_is_a_clear_error():
    fusion = build("cross-positional")
    long = torch.randn(3, 20, D)
    inputs = {**encoded(), "image": EncoderOutput(long, torch.ones(3, 20, dtype=torch.bool), long.mean(1))}
    with pytest.raises(ValueError, match="stream 'image': a sequence of 20 tokens is longer than max_length=12"):
        fusion(inputs)


def test_late_fusion_cls_pooling_needs_a_layer_and_encoder_pooling_takes_none():
    with pytest.raises(ValueError, match="pooling 'cls' needs depth >= 1"):
        FUSIONS["late"](["image", "text"], D, pooling="cls")
    with pytest.raises(ValueError, match="pooling 'encoder'.* take no stream layers, got depth=2"):
        FUSIONS["late"](["image", "text"], D, pooling="encoder", depth=2)
