"""Log-mel spectrogram against an independent NumPy implementation and known properties of tones."""

import numpy as np
import pytest
import torch

from polymodal.modalities.audio.features import LogMelSpectrogram, mel_centre_hz

RATE = 16000


def numpy_log_mel(wave, rate, n_fft, hop, win, n_mels, f_min, f_max, eps=1e-6):
    """The same definition, written out: reflect-pad, Hann-windowed frames, |rfft|², HTK triangles, log."""
    def mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)

    def hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    padded = np.pad(wave.astype(np.float64), n_fft // 2, mode="reflect")
    window = np.zeros(n_fft)
    left = (n_fft - win) // 2
    window[left:left + win] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)  # periodic Hann
    starts = range(0, len(padded) - n_fft + 1, hop)
    power = np.stack([np.abs(np.fft.rfft(padded[s:s + n_fft] * window)) ** 2 for s in starts], axis=1)  # (F, T)
    bins = np.linspace(0, rate / 2, n_fft // 2 + 1)
    edges = hz(np.linspace(mel(f_min), mel(f_max), n_mels + 2))
    bank = np.zeros((n_mels, len(bins)))
    for m in range(n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        for k, f in enumerate(bins):
            if lo < f <= mid:
                bank[m, k] = (f - lo) / (mid - lo)
            elif mid < f < hi:
                bank[m, k] = (hi - f) / (hi - mid)
    return np.log(bank @ power + eps)


@pytest.mark.parametrize("n_fft, hop, win, n_mels, f_min, f_max", [
    (400, 160, 400, 64, 0.0, 8000.0),
    (512, 128, 320, 40, 50.0, 7000.0),
])
def test_matches_numpy_reference(n_fft, hop, win, n_mels, f_min, f_max):
    rng = np.random.default_rng(0)
    waves = rng.standard_normal((3, 4000)).astype(np.float32) * 0.3
    module = LogMelSpectrogram(sample_rate=RATE, n_fft=n_fft, hop_length=hop, win_length=win, n_mels=n_mels,
                               f_min=f_min, f_max=f_max)
    ours = module(torch.from_numpy(waves)).double().numpy()  # (3, M, T): batched
    assert ours.shape == (3, n_mels, module.num_frames(4000))
    for i in range(3):
        reference = numpy_log_mel(waves[i], RATE, n_fft, hop, win, n_mels, f_min, f_max)
        np.testing.assert_allclose(ours[i], reference, atol=2e-3, rtol=1e-4)


@pytest.mark.parametrize("freq", [300.0, 1000.0, 3000.0])
def test_a_pure_tone_lands_in_its_mel_band(freq):
    module = LogMelSpectrogram(sample_rate=RATE, n_fft=1024, hop_length=256, n_mels=64)
    tone = torch.sin(2 * torch.pi * freq * torch.arange(RATE) / RATE)
    energy = module(tone).mean(dim=-1)  # (M,)
    centres = mel_centre_hz(64, RATE)
    assert abs(float(centres[energy.argmax()]) - freq) <= float(np.diff(centres.numpy()).max())
    assert int(energy.argmax()) == int((centres - freq).abs().argmin())


def test_louder_is_higher_by_the_power_ratio_and_silence_is_the_floor():
    module = LogMelSpectrogram(sample_rate=RATE, n_mels=32)
    tone = torch.sin(2 * torch.pi * 800 * torch.arange(RATE) / RATE)
    quiet, loud = module(0.1 * tone), module(1.0 * tone)
    band = int(loud.mean(-1).argmax())
    torch.testing.assert_close(loud[band] - quiet[band], torch.full_like(loud[band], np.log(100.0)), atol=1e-2, rtol=0)
    silence = module(torch.zeros(RATE))
    torch.testing.assert_close(silence, torch.full_like(silence, np.log(1e-6)))


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="win_length"):
        LogMelSpectrogram(n_fft=256, win_length=400)
    with pytest.raises(ValueError, match="f_max=9000"):
        LogMelSpectrogram(sample_rate=16000, f_max=9000)
