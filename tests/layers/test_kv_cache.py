"""The KV cache: decoding with it, a prompt at once or in pieces, gives what attention over the whole
sequence gives, left padding included; cross-attention projects its context once."""

import pytest
import torch

from polymodal.layers.attention import KVCache, MultiHeadAttention


def left_padded(batch: int = 3, length: int = 7, dim: int = 16):
    torch.manual_seed(0)
    x = torch.randn(batch, length, dim)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[1:2, :2] = False  # prompts of different lengths, padded on the left as for batched generation
    mask[2:3, :4] = False
    return x, mask


@pytest.mark.parametrize("pieces", [[7], [4, 1, 1, 1], [1] * 7, [2, 3, 2]])
def test_cached_decoding_equals_causal_attention_over_the_whole_sequence(pieces):
    attn = MultiHeadAttention(16, 4).eval()
    x, mask = left_padded()
    with torch.no_grad():
        whole = attn(x, mask=mask, causal=True)
        cache, outs, start = KVCache(), [], 0
        for n in pieces:  # a prefill, then pieces after it: each query i of a piece is position start + i
            outs.append(attn(x[:, start:start + n], mask=mask[:, start:start + n], causal=True, cache=cache))
            start += n
    stepped = torch.cat(outs, dim=1)
    assert cache.length == 7 and torch.equal(cache.mask, mask)
    torch.testing.assert_close(stepped[mask], whole[mask], atol=1e-6, rtol=1e-5)  # padding rows are never read


def test_a_cache_without_padding_needs_no_mask_and_matches_too():
    attn = MultiHeadAttention(16, 2).eval()
    x, _ = left_padded(batch=2, length=5)
    with torch.no_grad():
        whole = attn(x, causal=True)
        cache = KVCache()
        parts = [attn(x[:, :3], causal=True, cache=cache), attn(x[:, 3:4], causal=True, cache=cache),
                 attn(x[:, 4:], causal=True, cache=cache)]
    assert cache.mask is None
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, atol=1e-6, rtol=1e-5)


def test_a_piece_sees_no_later_position():
    # changing the last token must leave every earlier cached output as it was
    attn = MultiHeadAttention(8, 2).eval()
    x, _ = left_padded(batch=1, length=4, dim=8)
    y = x.clone()
    y[:, 3] += 1.0
    with torch.no_grad():
        a = attn(x[:, :2], causal=True, cache=(c := KVCache())), attn(x[:, 2:], causal=True, cache=c)
        b = attn(y[:, :2], causal=True, cache=(d := KVCache())), attn(y[:, 2:], causal=True, cache=d)
    torch.testing.assert_close(a[0], b[0], atol=0, rtol=0)
    torch.testing.assert_close(a[1][:, 0], b[1][:, 0], atol=0, rtol=0)
    assert not torch.allclose(a[1][:, 1], b[1][:, 1])


def test_cross_attention_projects_its_context_once():
    attn = MultiHeadAttention(16, 4, context_dim=12).eval()
    torch.manual_seed(1)
    x, memory = torch.randn(2, 3, 16), torch.randn(2, 5, 12)
    memory_mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    with torch.no_grad():
        whole = attn(x, memory, context_mask=memory_mask)
        cache = KVCache()
        first = attn(x[:, :1], memory, context_mask=memory_mask, cache=cache)
        rest = attn(x[:, 1:], cache=cache)  # the memory comes from the cache
    assert cache.length == 5 and torch.equal(cache.mask, memory_mask)
    torch.testing.assert_close(torch.cat([first, rest], dim=1), whole, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="needs a context"):
        attn(x)


def test_a_cache_refuses_another_batch():
    attn = MultiHeadAttention(8, 2)
    cache = KVCache()
    attn(torch.randn(2, 3, 8), causal=True, cache=cache)
    with pytest.raises(ValueError, match="a cache of batch 2 got keys of batch 3"):
        attn(torch.randn(3, 1, 8), causal=True, cache=cache)


def test_a_causal_stack_with_cross_attention_decodes_step_by_step_as_at_once():
    from polymodal.layers.transformer import TransformerEncoder

    torch.manual_seed(2)
    stack = TransformerEncoder(16, 2, 4, context_dim=12).eval()
    x, mask = left_padded()
    memory = torch.randn(3, 5, 12)
    memory_mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2, [True] * 5])
    with torch.no_grad():
        whole = stack(x, mask, context=memory, context_mask=memory_mask, causal=True)
        cache = stack.new_cache()
        outs = [stack(x[:, :4], mask[:, :4], context=memory, context_mask=memory_mask, causal=True, cache=cache)]
        outs += [stack(x[:, t:t + 1], mask[:, t:t + 1], causal=True, cache=cache) for t in range(4, 7)]
    torch.testing.assert_close(torch.cat(outs, dim=1)[mask], whole[mask], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="a cache of 1 blocks for a stack of 2"):
        stack(x, mask, context=memory, causal=True, cache=cache[:1])
