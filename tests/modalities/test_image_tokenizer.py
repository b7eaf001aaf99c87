"""The image tokenizer: FSQ's rounding and straight-through gradient by hand, codes ↔ vectors, PSNR, SSIM
and codebook usage against hand-computed values, and the reconstruction task learning on the shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from polymodal.metrics import code_usage, psnr, ssim
from polymodal.modalities.image.tokenizer import PixelDecoder, QuantizedImageEncoder, make_quantizer


def tiny(levels=(5, 4), **options) -> QuantizedImageEncoder:
    torch.manual_seed(0)
    return QuantizedImageEncoder(out_dim=6, image_size=16, downsample=4, channels=[8, 8, 16],
                                 quantizer={"type": "fsq", "levels": list(levels)}, **options)


def fsq_by_hand(z: float, levels: int) -> tuple[float, int, float]:
    """FSQ of one channel (Mentzer et al. 2023, with the library's eps = 1e-3): the value, its level index
    and d value / d z (the straight-through gradient through the rounding)."""
    half_l = (levels - 1) * (1 + 1e-3) / 2
    offset = 0.5 if levels % 2 == 0 else 0.0
    shift = math.atanh(offset / half_l)
    bounded = math.tanh(z + shift) * half_l - offset
    half_width = levels // 2
    value = round(bounded) / half_width
    return value, round(value * half_width + half_width), (1 - math.tanh(z + shift) ** 2) * half_l / half_width


def test_fsq_rounds_each_channel_to_its_levels_with_a_straight_through_gradient():
    encoder = tiny()
    z = torch.tensor([[[0.3, -2.0], [1.2, 0.05], [-0.6, 0.9]]], requires_grad=True)  # (1, 3 tokens, 2 channels)
    quantised, codes, aux = encoder.quantize(z)
    for n in range(3):
        (v0, i0, _), (v1, i1, _) = (fsq_by_hand(float(z[0, n, c].detach()), (5, 4)[c]) for c in range(2))
        assert quantised[0, n].tolist() == pytest.approx([v0, v1], abs=1e-6)
        assert int(codes[0, n]) == i0 + 5 * i1  # the first channel varies fastest
    quantised.sum().backward()
    expected = [[fsq_by_hand(float(z[0, n, c].detach()), (5, 4)[c])[2] for c in range(2)] for n in range(3)]
    torch.testing.assert_close(z.grad[0], torch.tensor(expected), atol=1e-5, rtol=0)
    assert float(aux) == 0.0 and encoder.num_codes == 20


def test_codes_map_back_to_the_tokens_they_came_from():
    encoder = tiny().eval()
    out = encoder(torch.randn(2, 3, 16, 16))
    assert out.codes.shape == (2, 16) and out.tokens.shape == (2, 16, 6)
    torch.testing.assert_close(encoder.embed_codes(out.codes), out.tokens)
    decoder = PixelDecoder(6, encoder.grid, encoder.channels)
    assert decoder(out.tokens).shape == (2, 3, 16, 16)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="downsample: expected 2, 4, 8 or 16"):
        QuantizedImageEncoder(out_dim=4, image_size=16, downsample=3)
    with pytest.raises(ValueError, match="image_size=20 is not a multiple of downsample=8"):
        QuantizedImageEncoder(out_dim=4, image_size=20, downsample=8)
    with pytest.raises(ValueError, match="channels: expected 3 widths"):
        QuantizedImageEncoder(out_dim=4, image_size=16, downsample=4, channels=[8, 8, 8, 8])
    with pytest.raises(ValueError, match="quantizer.type: expected one of fsq, vq"):
        make_quantizer({"type": "lfq"})
    with pytest.raises(ValueError, match="unknown key 'codebook_size' for fsq"):
        make_quantizer({"type": "fsq", "codebook_size": 8})


def test_a_local_tokenizer_codes_each_cell_from_its_neighbourhood_alone():
    def encoder(**options):
        torch.manual_seed(0)
        return QuantizedImageEncoder(out_dim=6, image_size=64, downsample=8, channels=[8, 8, 8, 16],
                                     quantizer={"type": "fsq", "levels": [8, 5, 5, 5]}, **options).eval()

    flat = torch.full((1, 3, 64, 64), 0.3)
    spot = flat.clone()
    spot[:, :, :8, :8] = 0.9  # an object in the top-left cell, beyond the receptive field of the last one
    local, pooled = encoder(norm="channel", padding="replicate"), encoder()
    with torch.no_grad():
        latents = local.latents(flat)[0]
        torch.testing.assert_close(latents, latents[:1].expand_as(latents))  # one vector, border cells too
        assert len(set(local(flat).codes[0].tolist())) == 1  # a flat image is a single code
        torch.testing.assert_close(local.latents(spot)[0, -1], latents[-1])  # the far cell is unchanged
        assert not torch.allclose(local.latents(spot)[0, 0], latents[0])  # the object's cell is not
        # GroupNorm and zero padding: the border differs, and the far cell moves with the image's statistics
        plain = pooled.latents(flat)[0]
        assert not torch.allclose(plain[0], plain[27])
        assert not torch.allclose(pooled.latents(spot)[0, -1], plain[-1])
    with pytest.raises(ValueError, match="norm: expected one of group, channel"):
        encoder(norm="batch")
    with pytest.raises(ValueError, match="padding: expected one of zeros, replicate"):
        encoder(padding="reflect")


def test_psnr_ssim_and_code_usage_by_hand():
    a = torch.full((1, 3, 16, 16), 0.5)
    assert float(psnr(a + 0.1, a)) == pytest.approx(20.0, abs=1e-4)  # MSE 0.01 → 10·log10(1 / 0.01)
    c1 = 0.01**2
    assert float(ssim(torch.full((1, 1, 11, 11), 0.2), torch.full((1, 1, 11, 11), 0.6))) == pytest.approx(
        (2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1), rel=1e-5)  # flat images: the luminance term alone
    rng = np.random.default_rng(0)
    x, y = rng.random((11, 11)), rng.random((11, 11))
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()  # one 11 × 11 window: the formula written out
    mx, my = (w * x).sum(), (w * y).sum()
    vx, vy, cov = (w * x * x).sum() - mx**2, (w * y * y).sum() - my**2, (w * x * y).sum() - mx * my
    expected = (2 * mx * my + c1) * (2 * cov + 0.03**2) / ((mx**2 + my**2 + c1) * (vx + vy + 0.03**2))
    got = ssim(torch.tensor(x)[None, None].float(), torch.tensor(y)[None, None].float())
    assert float(got) == pytest.approx(expected, rel=1e-4) and float(ssim(got.new_ones(1, 1, 11, 11), got.new_ones(1, 1, 11, 11))) == 1.0
    usage = code_usage([torch.tensor([0, 0]), torch.tensor([1, 3])], 4)
    assert usage["codebook_usage"] == 0.75
    assert usage["perplexity"] == pytest.approx(math.exp(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))))


def test_a_vq_codebook_moves_by_exponential_moving_averages():
    """VQ-VAE's EMA update (van den Oord et al. 2017, appendix; the library's form): per code, counts
    N ← γN + (1 − γ)n and sums m ← γm + (1 − γ)Σx of the vectors assigned to it; the code is m over N
    Laplace-smoothed, (N + ε) / (ΣN + Kε) · ΣN. The commitment loss is β·‖x − sg(code)‖²."""
    torch.manual_seed(0)
    vq, width, size = make_quantizer({"type": "vq", "codebook_size": 3, "dim": 2, "decay": 0.8,
                                      "commitment_weight": 0.25, "kmeans_init": False})
    codebook = vq._codebook
    with torch.no_grad():
        codebook.embed.copy_(torch.tensor([[[0.0, 0.0], [1.0, 1.0], [-3.0, 3.0]]]))
        codebook.embed_avg.copy_(codebook.embed)
    before = codebook.embed[0].clone()
    x = torch.tensor([[[0.1, -0.1], [0.3, 0.1], [0.9, 1.2]]])  # two vectors nearest code 0, one nearest code 1
    vq.train()
    quantised, codes, loss = vq(x)
    assert codes.tolist() == [[0, 0, 1]]
    torch.testing.assert_close(quantised, before[codes[0]][None])  # the codes used are the ones before the update
    torch.testing.assert_close(loss, 0.25 * (x - before[codes[0]][None]).pow(2).mean(), atol=1e-6, rtol=0)
    counts = 0.8 * torch.ones(3) + 0.2 * torch.tensor([2.0, 1.0, 0.0])
    sums = 0.8 * before + 0.2 * torch.stack([x[0, :2].sum(0), x[0, 2], torch.zeros(2)])
    smoothed = (counts + 1e-5) / (counts.sum() + 3 * 1e-5) * counts.sum()
    torch.testing.assert_close(codebook.embed[0], sums / smoothed[:, None], atol=1e-5, rtol=0)
    assert width == 2 and size == 3
    with pytest.raises(ValueError, match="quantizer.decay: expected a number between 0 and 1"):
        make_quantizer({"type": "vq", "decay": 1.5})
