"""The speech front end: lengths from the processor's padding, per-utterance normalisation, SpecAugment,
convolutional subsampling and conformer blocks, each against what it must do on a tiny input."""

import pytest
import torch

from polymodal.modalities.audio.speech import (ConformerBlock, ConvSubsampling, SpecAugment, SpeechEncoder,
                                               normalise_per_utterance, valid_samples)


def test_valid_samples_end_at_the_last_nonzero_sample():
    wave = torch.zeros(3, 10)
    wave[0, :4] = 1.0
    wave[0, 1] = 0.0  # a zero inside the utterance is speech
    wave[1, :] = 0.5
    assert valid_samples(wave).tolist() == [4, 10, 10]  # an all-silent row counts as whole


def test_per_utterance_normalisation_uses_only_the_valid_frames():
    torch.manual_seed(0)
    features = torch.randn(2, 3, 8) * 4 + 2
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[1, 5:] = False
    out = normalise_per_utterance(features, mask)
    valid = out[1, :, :5]
    assert torch.allclose(valid.mean(dim=1), torch.zeros(3), atol=1e-5)
    assert torch.allclose(valid.var(dim=1, unbiased=False), torch.ones(3), atol=1e-4)
    assert (out[1, :, 5:] == 0).all()
    # the padded frames' values never reach the valid ones
    changed = features.clone()
    changed[1, :, 5:] = 1e4
    assert torch.equal(normalise_per_utterance(changed, mask), out)
    # the statistics are per band: a band's offset does not move another band
    shifted = features.clone()
    shifted[0, 0] += 100
    assert torch.allclose(normalise_per_utterance(shifted, mask)[0, 1:], out[0, 1:])


def test_specaugment_masks_are_seeded_bounded_and_only_in_training():
    augment = SpecAugment(freq_masks=2, freq_width=3, time_masks=2, time_width=0.2)
    lengths = torch.tensor([50, 20])
    first = augment.masks((2, 16, 50), lengths, torch.Generator().manual_seed(7))
    again = augment.masks((2, 16, 50), lengths, torch.Generator().manual_seed(7))
    other = augment.masks((2, 16, 50), lengths, torch.Generator().manual_seed(8))
    assert torch.equal(first, again) and not torch.equal(first, other)
    many = torch.stack([augment.masks((2, 16, 50), lengths, torch.Generator().manual_seed(s)) for s in range(200)])
    bands = many.all(dim=3)  # (draws, B, M): whole bands masked
    frames = many.all(dim=2)  # (draws, B, T): whole frames masked
    assert bands.sum(dim=2).max() <= 2 * 3 and bands.sum(dim=2).max() >= 4  # two masks of up to 3 bands
    # time masks: up to 20% of each utterance's own frames per mask, never past its end
    assert frames[:, 0].sum(dim=1).max() <= 2 * 10 and frames[:, 1].sum(dim=1).max() <= 2 * 4
    assert not frames[:, 1, 20:].any()
    assert frames[:, 0].sum(dim=1).max() >= 12
    features = torch.randn(2, 16, 50)
    augment.eval()
    assert torch.equal(augment(features, lengths), features)
    augment.train()
    assert (augment(features, lengths, torch.Generator().manual_seed(7)) == 0).sum() == first.sum()


@pytest.mark.parametrize("factor", [2, 4, 8])
@pytest.mark.parametrize("frames", [1, 7, 8, 101, 301])
def test_subsampling_frames_formula_matches_the_convolutions(factor, frames):
    sub = ConvSubsampling(n_mels=20, dim=8, factor=factor, channels=4)
    out = sub(torch.randn(2, 20, frames))
    assert out.shape == (2, sub.frames(frames), 8)


def test_conformer_block_ignores_padded_frames():
    torch.manual_seed(0)
    block = ConformerBlock(16, 2, kernel_size=5, dropout=0.0).eval()
    x = torch.randn(2, 9, 16)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[0, 6:] = False
    out = block(x, mask)
    changed = x.clone()
    changed[0, 6:] = 50.0
    assert torch.allclose(block(changed, mask)[0, :6], out[0, :6], atol=1e-5)
    assert torch.allclose(block(changed, mask)[1], out[1])
    # without the mask the padding would leak in: the check above can fail
    assert not torch.allclose(block(changed, torch.ones_like(mask))[0, :6], out[0, :6], atol=1e-3)


@pytest.mark.parametrize("block", ["conformer", "transformer"])
def test_speech_encoder_frame_rate_mask_and_padding(block):
    torch.manual_seed(0)
    encoder = SpeechEncoder(out_dim=16, sample_rate=8000, duration=1.0, n_mels=20, n_fft=200, hop_length=80,
                            subsampling=4, conv_channels=4, block=block, depth=1, num_heads=2, conv_kernel=5).eval()
    assert encoder.num_tokens == 26  # 101 frames at 100 a second → ceil(ceil(101 / 2) / 2): 25 a second
    wave = torch.zeros(2, 8000)
    wave[0] = torch.randn(8000) * 0.1
    wave[1, :4000] = torch.randn(4000) * 0.1  # half a second of sound, then the processor's zeros
    out = encoder(wave)
    assert out.tokens.shape == (2, 26, 16)
    assert out.mask[0].all() and out.mask[1].sum() == 13  # 51 frames → 26 → 13
    # the same half second at the head of a batch of one gives the same valid tokens
    alone = encoder(wave[1:])
    assert torch.allclose(alone.tokens[0, :13], out.tokens[1, :13], atol=1e-5)
    with pytest.raises(ValueError, match=r"expected waveforms \(B, 8000\)"):
        encoder(torch.zeros(1, 100))
