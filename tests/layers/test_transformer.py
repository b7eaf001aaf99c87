"""TransformerEncoder: padding invariance, causality, cross-attention, initialisation."""

import pytest
import torch
from torch import nn

from polymodal.layers import TransformerBlock, TransformerEncoder, init_weights_

DIM, HEADS, B, N = 16, 4, 2, 6


def _encoder(context_dim=None, dropout=0.0):
    torch.manual_seed(0)
    return TransformerEncoder(DIM, depth=2, num_heads=HEADS, context_dim=context_dim, dropout=dropout).eval()


def test_appended_padding_leaves_real_outputs_unchanged():
    enc = _encoder()
    x = torch.randn(B, N, DIM)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[1, 4:] = False
    padded_x = torch.cat([x, 50 * torch.randn(B, 3, DIM)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(B, 3, dtype=torch.bool)], dim=1)
    short, long = enc(x, mask), enc(padded_x, padded_mask)
    torch.testing.assert_close(long[:, :N][mask], short[mask], atol=1e-5, rtol=0)
    # Without the mask the padding does change the outputs: the mask is what protects them.
    assert not torch.allclose(enc(padded_x)[:, :N], short, atol=1e-3)


def test_causal_output_ignores_the_future():
    enc = _encoder()
    x = torch.randn(B, N, DIM)
    t = 3
    changed = x.clone()
    changed[:, t + 1 :] = torch.randn(B, N - t - 1, DIM)
    a, b = enc(x, causal=True), enc(changed, causal=True)
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :])
    # Bidirectional attention does look ahead.
    assert not torch.allclose(enc(x)[:, : t + 1], enc(changed)[:, : t + 1])


def test_cross_attention_uses_context_and_its_mask():
    enc = _encoder(context_dim=10)
    x, ctx = torch.randn(B, N, DIM), torch.randn(B, 4, 10)
    ctx_mask = torch.tensor([[True, True, False, False]] * B)
    out = enc(x, context=ctx, context_mask=ctx_mask)
    assert out.shape == (B, N, DIM)
    altered = ctx.clone()
    altered[:, 2:] = torch.randn(B, 2, 10)
    torch.testing.assert_close(enc(x, context=altered, context_mask=ctx_mask), out, atol=1e-6, rtol=0)
    assert not torch.allclose(enc(x, context=altered), enc(x, context=ctx))


def test_context_mismatch_is_an_error():
    with pytest.raises(ValueError, match="context"):
        TransformerBlock(DIM, HEADS, context_dim=8)(torch.randn(B, N, DIM))
    with pytest.raises(ValueError, match="context_dim"):
        TransformerBlock(DIM, HEADS)(torch.randn(B, N, DIM), context=torch.randn(B, 2, 8))


def test_dropout_only_in_training():
    enc = _encoder(dropout=0.5)
    x = torch.randn(B, N, DIM)
    torch.testing.assert_close(enc(x), enc(x))
    enc.train()
    assert not torch.allclose(enc(x), enc(x))


def test_init_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.LayerNorm(256), nn.Embedding(300, 64, padding_idx=2))
    init_weights_(model)
    linear, norm, emb = model
    assert abs(linear.weight.std().item() - 0.02) < 0.002 and not linear.bias.any()
    assert torch.equal(norm.weight, torch.ones(256)) and not norm.bias.any()
    assert abs(emb.weight.std().item() - 0.02) < 0.002 and not emb.weight[2].any()
    init_weights_(model, std=0.125)
    assert abs(linear.weight.std().item() - 0.125) < 0.005 and abs(emb.weight.std().item() - 0.125) < 0.005


def test_gated_cross_attention_starts_shut_and_learns_to_open():
    """tanh(0) = 0: at first the block ignores its context exactly; the gate's gradient is not zero."""
    torch.manual_seed(0)
    block = TransformerBlock(8, 2, context_dim=6, gated_cross=True)
    x, context = torch.randn(2, 3, 8), torch.randn(2, 4, 6)
    torch.testing.assert_close(block(x, context=context), block(x, context=torch.randn(2, 4, 6)), rtol=0, atol=0)
    block(x, context=context).sum().backward()
    assert block.cross_gate.grad.abs().item() > 0
    with torch.no_grad():
        block.cross_gate.fill_(1.0)
    assert not torch.allclose(block(x, context=context), block(x, context=torch.randn(2, 4, 6)))
