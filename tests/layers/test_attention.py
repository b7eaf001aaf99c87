"""MultiHeadAttention against torch.nn.MultiheadAttention, plus its masking guarantees."""

import pytest
import torch
from torch import nn

from polymodal.layers import MultiHeadAttention, load_torch_mha_

DIM, HEADS, B, N = 16, 4, 3, 7
ATOL = 1e-5


def _pair(context_dim=None):
    torch.manual_seed(0)
    if context_dim is None:
        ref = nn.MultiheadAttention(DIM, HEADS, batch_first=True)
    else:
        ref = nn.MultiheadAttention(DIM, HEADS, batch_first=True, kdim=context_dim, vdim=context_dim)
    # Random biases too: torch initialises them to zero, which would hide a bias mix-up.
    with torch.no_grad():
        for p in ref.parameters():
            p.normal_(0, 0.3)
    ours = MultiHeadAttention(DIM, HEADS, context_dim=context_dim)
    load_torch_mha_(ours, ref)
    return ours.eval(), ref.eval()


def test_fused_qkv_has_the_torch_layout():
    ours, ref = _pair()
    assert torch.equal(ours.qkv.weight, ref.in_proj_weight)
    assert (ours.num_heads, ours.head_dim) == (HEADS, DIM // HEADS)


def test_self_attention_matches_torch():
    ours, ref = _pair()
    x = torch.randn(B, N, DIM)
    expected, _ = ref(x, x, x, need_weights=False)
    torch.testing.assert_close(ours(x), expected, atol=ATOL, rtol=0)


def test_key_padding_mask_matches_torch():
    ours, ref = _pair()
    x = torch.randn(B, N, DIM)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[0, 4:] = False
    mask[2, 1:] = False
    expected, _ = ref(x, x, x, key_padding_mask=~mask, need_weights=False)  # torch: True = ignore
    torch.testing.assert_close(ours(x, mask=mask), expected, atol=ATOL, rtol=0)
    # The mask must matter, or this test proves nothing.
    assert not torch.allclose(ours(x), expected, atol=1e-3)


def test_causal_matches_torch():
    ours, ref = _pair()
    x = torch.randn(B, N, DIM)
    future = torch.triu(torch.ones(N, N, dtype=torch.bool), diagonal=1)  # torch: True = ignore
    expected, _ = ref(x, x, x, attn_mask=future, need_weights=False)
    torch.testing.assert_close(ours(x, causal=True), expected, atol=ATOL, rtol=0)


def test_causal_with_padding_matches_torch():
    ours, ref = _pair()
    x = torch.randn(B, N, DIM)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[1, 5:] = False
    future = torch.triu(torch.ones(N, N, dtype=torch.bool), diagonal=1)
    expected, _ = ref(x, x, x, key_padding_mask=~mask, attn_mask=future, need_weights=False)
    torch.testing.assert_close(ours(x, mask=mask, causal=True), expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("masked", [False, True])
def test_cross_attention_matches_torch(masked):
    context_dim, m = 10, 5
    ours, ref = _pair(context_dim)
    x, ctx = torch.randn(B, N, DIM), torch.randn(B, m, context_dim)
    ctx_mask = torch.ones(B, m, dtype=torch.bool)
    if masked:
        ctx_mask[0, 2:] = False
    expected, _ = ref(x, ctx, ctx, key_padding_mask=~ctx_mask, need_weights=False)
    torch.testing.assert_close(ours(x, ctx, context_mask=ctx_mask), expected, atol=ATOL, rtol=0)


def test_appended_padding_leaves_real_positions_unchanged():
    ours, _ = _pair()
    x = torch.randn(B, N, DIM)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[0, 5:] = False
    padded_x = torch.cat([x, 100 * torch.randn(B, 4, DIM)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(B, 4, dtype=torch.bool)], dim=1)
    short, long = ours(x, mask=mask), ours(padded_x, mask=padded_mask)
    torch.testing.assert_close(long[:, :N][mask], short[mask], atol=ATOL, rtol=0)


def test_fully_masked_rows_are_finite_and_other_rows_unchanged():
    ours, _ = _pair()
    x = torch.randn(B, N, DIM, requires_grad=True)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[1] = False
    y = ours(x, mask=mask)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y[[0, 2]], ours(x[[0, 2]]), atol=ATOL, rtol=0)
    # Documented choice, the same on every SDPA backend: a row with no real key attends to all keys.
    torch.testing.assert_close(y[1], ours(x[1:2])[0], atol=ATOL, rtol=0)
    y.sum().backward()
    assert torch.isfinite(x.grad).all()
    # Causal plus padding at the front: the first query sees only a padded key.
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[:, 0] = False
    y = ours(x, mask=mask, causal=True)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y[:, 0], ours(x)[:, 0], atol=ATOL, rtol=0)


def test_gradients_reach_every_parameter_and_input():
    for ours in (MultiHeadAttention(DIM, HEADS), MultiHeadAttention(DIM, HEADS, context_dim=6)):
        x = torch.randn(B, N, DIM, requires_grad=True)
        ctx = torch.randn(B, 3, 6) if ours.context_dim else None
        ours(x, ctx).pow(2).sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
        for name, p in ours.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_wrong_mode_arguments_are_errors():
    with pytest.raises(ValueError, match="context"):
        MultiHeadAttention(DIM, HEADS)(torch.randn(B, N, DIM), torch.randn(B, 2, DIM))
    with pytest.raises(ValueError, match="context"):
        MultiHeadAttention(DIM, HEADS, context_dim=4)(torch.randn(B, N, DIM))
    with pytest.raises(ValueError, match="bool"):
        MultiHeadAttention(DIM, HEADS)(torch.randn(B, N, DIM), mask=torch.ones(B, N, dtype=torch.long))
    with pytest.raises(ValueError, match="num_heads=5"):
        MultiHeadAttention(DIM, 5)


def test_padded_context_tokens_change_nothing_in_cross_attention():
    context_dim, m = 10, 5
    ours, _ = _pair(context_dim)
    x, ctx = torch.randn(B, N, DIM), torch.randn(B, m, context_dim)
    ctx_mask = torch.ones(B, m, dtype=torch.bool)
    ctx_mask[1, 3:] = False
    padded_ctx = torch.cat([ctx, 1e3 * torch.randn(B, 4, context_dim)], dim=1)
    padded_mask = torch.cat([ctx_mask, torch.zeros(B, 4, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(ours(x, padded_ctx, context_mask=padded_mask), ours(x, ctx, context_mask=ctx_mask),
                               atol=ATOL, rtol=0)
    # example 1 sees only its first 3 context tokens: the same as being given just those
    torch.testing.assert_close(ours(x[1:2], padded_ctx[1:2], context_mask=padded_mask[1:2]),
                               ours(x[1:2], ctx[1:2, :3]), atol=ATOL, rtol=0)


def test_an_example_with_no_context_is_finite_and_leaves_the_others_unchanged():
    # a modality absent from one example: every one of its context keys is masked
    context_dim, m = 6, 4
    ours, _ = _pair(context_dim)
    x, ctx = torch.randn(B, N, DIM, requires_grad=True), torch.randn(B, m, context_dim)
    ctx_mask = torch.ones(B, m, dtype=torch.bool)
    ctx_mask[2] = False
    y = ours(x, ctx, context_mask=ctx_mask)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y[:2], ours(x[:2], ctx[:2]), atol=ATOL, rtol=0)
    y.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("cross, causal", [(False, False), (False, True), (True, False)])
def test_kept_weights_give_the_same_output_and_are_a_distribution_over_real_keys(cross, causal):
    ours, _ = _pair(10 if cross else None)
    x, ctx = torch.randn(B, N, DIM), torch.randn(B, 5, 10) if cross else None
    mask = torch.ones(B, 5 if cross else N, dtype=torch.bool)
    mask[0, 3:] = False
    kwargs = {"context_mask": mask} if cross else {"mask": mask, "causal": causal}
    expected = ours(x, ctx, **kwargs) if cross else ours(x, **kwargs)
    ours.keep_weights = True
    got = ours(x, ctx, **kwargs) if cross else ours(x, **kwargs)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
    weights = ours.last_weights  # (B, heads, N, M)
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:3]))
    assert weights[0, :, :, 3:].abs().max() == 0  # no weight on padding
    if causal:
        assert torch.equal(weights[1].triu(1), torch.zeros_like(weights[1]))  # none on the future
