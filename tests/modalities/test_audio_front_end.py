"""The audio encoders' log-mel front end: standardised per example, finite on silence."""

import torch

from polymodal.modalities.audio.encoders import _LogMelFrontEnd


def test_each_example_is_standardised_alone_and_silence_stays_finite():
    front = _LogMelFrontEnd(sample_rate=8000, duration=0.5, n_mels=16, n_fft=256, hop_length=64)
    torch.manual_seed(0)
    noise = 0.2 * torch.randn(4000)
    waves = torch.stack([noise, 10 * noise, torch.zeros(4000)])  # (3, S): quiet, loud, silent
    out = front(waves)  # (3, M, T)
    for i in range(2):
        mel = front.mel(waves[i])
        torch.testing.assert_close(out[i], (mel - mel.mean()) / mel.std(), atol=1e-4, rtol=1e-4)
        assert abs(out[i].mean().item()) < 1e-5 and abs(out[i].std().item() - 1) < 1e-4
    # silence has no spread: its spectrogram is the constant floor, standardised to (about) zeros, not NaN
    assert torch.isfinite(out[2]).all()
    torch.testing.assert_close(out[2], torch.zeros_like(out[2]), atol=1e-2, rtol=0)
    # blind to overall loudness: 10× the amplitude adds a constant to the log-mel, which standardisation removes
    torch.testing.assert_close(out[0], out[1], atol=1e-3, rtol=0)
