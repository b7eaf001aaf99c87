"""Our decoder with GPT-2's weights against Hugging Face GPT-2: logits, greedy and beam search."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from polymodal.generation import GenerationSettings, generate, left_pad  # noqa: E402
from polymodal.models.gpt2 import decoder_from_gpt2  # noqa: E402
from polymodal.models.hf_decoder import HFSession  # noqa: E402

PROMPTS = [[5, 10, 11, 12, 13], [5, 20], [5, 30, 31]]


@pytest.fixture(scope="module")
def gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=61, n_positions=48, n_embd=32, n_layer=2, n_head=4,
                                     bos_token_id=5, eos_token_id=5, pad_token_id=0)
    hf = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # sharper than the N(0, 0.02) initialisation, so sequences differ by prompt
        for p in hf.parameters():
            p.mul_(8.0) if p.dim() > 1 else None
    return hf, decoder_from_gpt2(hf)


def hf_generate(hf, ids, mask, settings):
    """HF `generate`'s new tokens, cut before the first stop token."""
    out = hf.generate(input_ids=ids, attention_mask=mask.long(), max_new_tokens=settings.max_new_tokens,
                      num_beams=settings.num_beams, length_penalty=settings.length_penalty, do_sample=False,
                      eos_token_id=list(settings.stop_ids) or None, pad_token_id=0)
    rows = []
    for row in out[:, ids.shape[1]:].tolist():
        cut = next((i for i, t in enumerate(row) if t in settings.stop_ids), len(row))
        rows.append(row[:cut])
    return rows


def test_logits_equal_gpt2_with_left_padding(gpt2):
    hf, ours = gpt2
    ids, mask = left_pad(PROMPTS, 0)
    positions = (mask.long().cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask.long(), position_ids=positions).logits
        got = ours(ids, mask)
    torch.testing.assert_close(got[mask], expected[mask], atol=1e-4, rtol=0)
    assert not torch.allclose(got[mask][0], got[mask][1])  # the logits depend on the tokens


def test_gpt2_weights_load_exactly(gpt2):
    hf, ours = gpt2
    assert ours.lm_head is None and torch.equal(ours.embed.weight, hf.lm_head.weight)
    assert torch.equal(ours.positions.weight, hf.transformer.wpe.weight)
    assert torch.equal(ours.stack.norm.weight, hf.transformer.ln_f.weight)
    for block, theirs in zip(ours.stack.blocks, hf.transformer.h, strict=True):  # every layer, every weight
        for a, b in ((block.attn.qkv, theirs.attn.c_attn), (block.attn.out, theirs.attn.c_proj),
                     (block.mlp[0], theirs.mlp.c_fc), (block.mlp[2], theirs.mlp.c_proj)):
            assert torch.equal(a.weight, b.weight.T) and torch.equal(a.bias, b.bias)
        for a, b in ((block.ln1, theirs.ln_1), (block.ln2, theirs.ln_2)):
            assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def _stops_that_fire(hf, ids, mask):
    """Stop tokens the greedy continuations reach early, so the stop rules are exercised."""
    free = hf_generate(hf, ids, mask, GenerationSettings(max_new_tokens=10))
    return (free[0][2], free[1][4])


@pytest.mark.parametrize("num_beams,length_penalty", [(1, 1.0), (3, 1.0), (4, 0.0), (4, 2.0)])
@pytest.mark.parametrize("with_stops", [False, True])
def test_generation_equals_hf_generate(gpt2, num_beams, length_penalty, with_stops):
    hf, ours = gpt2
    ids, mask = left_pad(PROMPTS, 0)
    stops = _stops_that_fire(hf, ids, mask) if with_stops else ()
    settings = GenerationSettings(max_new_tokens=10, num_beams=num_beams, length_penalty=length_penalty,
                                  stop_ids=stops)
    expected = hf_generate(hf, ids, mask, settings)
    assert generate(lambda repeat: ours.session(repeat=repeat), ids, mask, settings) == expected
    assert generate(lambda repeat: HFSession(hf), ids, mask, settings) == expected
    if with_stops and length_penalty <= 1:  # (a penalty of 2 favours the longest hypotheses)
        assert any(len(row) < 10 for row in expected)  # a stop token did end a sequence


def test_cached_decoding_equals_full_forward(gpt2):
    """Prefill then one token at a time gives the logits a full forward gives at each position."""
    _, ours = gpt2
    ids, mask = left_pad(PROMPTS, 0)
    continuation = torch.tensor([[7, 8, 9], [17, 18, 19], [27, 28, 29]])
    session = ours.session()
    stepwise = [session.prefill(ids, mask)]
    stepwise += [session.step(continuation[:, i]) for i in range(continuation.shape[1])]
    full_ids = torch.cat([ids, continuation], 1)
    full_mask = torch.cat([mask, torch.ones_like(continuation, dtype=torch.bool)], 1)
    with torch.no_grad():
        full = ours(full_ids, full_mask)[:, ids.shape[1] - 1:]
    torch.testing.assert_close(torch.stack(stepwise, 1), full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_a_static_cache_and_a_compiled_step_give_the_eager_tokens(gpt2, num_beams):
    """The static KV cache (allocated once, written in place) and its step through torch.compile with
    `fullgraph=True` (any graph break fails) decode HF generate's tokens; the step compiles once."""
    import torch._dynamo as dynamo

    hf, ours = gpt2
    ids, mask = left_pad(PROMPTS, 0)
    settings = GenerationSettings(max_new_tokens=10, num_beams=num_beams)
    expected = hf_generate(hf, ids, mask, settings)
    capacity = ids.shape[1] + settings.max_new_tokens
    assert generate(lambda r: ours.session(repeat=r, max_length=capacity), ids, mask, settings) == expected
    dynamo.reset()
    dynamo.utils.counters.clear()
    compiled = {"backend": "aot_eager", "fullgraph": True}  # inductor's code: the GPU benchmark's part
    assert generate(lambda r: ours.session(repeat=r, max_length=capacity, compile=compiled), ids, mask,
                    settings) == expected
    assert dynamo.utils.counters["stats"]["unique_graphs"] == 1  # every step ran the one graph
    for options in ({}, {"compile": compiled}):  # compiled, the step cannot check: the session does
        session = ours.session(max_length=ids.shape[1] + 1, **options)
        with torch.no_grad():  # as generate() decodes
            session.prefill(ids, mask)
            session.step(torch.tensor([7, 8, 9]))
            with pytest.raises(ValueError, match="a static cache of 6 positions is full"):
                session.step(torch.tensor([7, 8, 9]))


@pytest.mark.parametrize("num_beams", [1, 3])
def test_hf_static_cache_and_compiled_steps_give_hf_generate_tokens(gpt2, num_beams):
    """An HF decoder with HF's StaticCache (sized at the prefill, its mask written in place) decodes
    `generate`'s tokens, eagerly and through torch.compile with `fullgraph=True`, compiling once; the
    settings reach it through `GenerationSettings(cache="static", compiled=True)`."""
    import torch._dynamo as dynamo

    hf, _ = gpt2
    ids, mask = left_pad(PROMPTS, 0)
    settings = GenerationSettings(max_new_tokens=10, num_beams=num_beams, cache="static")
    expected = hf_generate(hf, ids, mask, settings)
    with torch.no_grad():
        assert generate(lambda r, **o: HFSession(hf, 48, **o), ids, mask, settings) == expected
        dynamo.reset()
        dynamo.utils.counters.clear()
        compiled = {"backend": "aot_eager", "fullgraph": True}
        assert generate(lambda r, new_tokens, compile: HFSession(hf, 48, new_tokens=new_tokens, compile=compiled),
                        ids, mask, GenerationSettings(max_new_tokens=10, num_beams=num_beams, cache="static",
                                                      compiled=True)) == expected
    assert dynamo.utils.counters["stats"]["unique_graphs"] == 1  # every step ran the one graph
    with pytest.raises(ValueError, match="a compiled step needs cache: static"):
        GenerationSettings(compiled=True)
    session = HFSession(hf, 48, new_tokens=1)
    with torch.no_grad():
        session.prefill(ids, mask)
        session.step(torch.tensor([7, 8, 9]))
        with pytest.raises(ValueError, match="a static cache of 6 positions is full"):
            session.step(torch.tensor([7, 8, 9]))
