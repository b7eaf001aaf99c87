"""The sound tokenizer: what it reads (a normalised log-mel, time as its sequence), its length rules, and the
Griffin-Lim vocoder that turns a log-mel back into sound, against oracles: the pseudo-inverse's projection,
spectral convergence on a real sound's own magnitudes, and the sound judge."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polymodal.data.sound_generation import NUM_SAMPLES, render_beeps
from polymodal.data.sound_judge import sound_scores, trained_judge
from polymodal.modalities.audio.features import LogMelSpectrogram, mel_centre_hz
from polymodal.modalities.audio.tokenizer import LOG_CENTRE, LOG_SCALE, GriffinLim, MelDecoder, QuantizedAudioEncoder


@pytest.fixture(scope="module")
def encoder():
    return QuantizedAudioEncoder(out_dim=16, channels=[8, 8, 16])


def _sine(hz: float, n: int = NUM_SAMPLES) -> torch.Tensor:
    return 0.5 * torch.sin(2 * torch.pi * hz * torch.arange(n) / 16000)


def test_a_sound_is_a_sequence_of_frames_each_code_four_of_them(encoder):
    assert (encoder.frames, encoder.num_tokens, encoder.num_codes) == (64, 16, 1000)
    target = encoder.reconstruction_target(_sine(880.0)[None])  # (1, 64 mels, 64 frames)
    assert target.shape == (1, 64, 64)
    loudest = int(target[0, :, 32].argmax())
    centres = mel_centre_hz(64, 16000)
    assert loudest == int((centres - 880).abs().argmin())  # the band around 880 Hz
    floor = (np.log(1e-5) - LOG_CENTRE) / LOG_SCALE
    assert target.min() >= floor - 1e-5 and target.max() <= 1  # the log-mel in about [-1, 1]
    out = encoder(_sine(330.0)[None].repeat(2, 1))
    assert out.codes.shape == (2, 16) and torch.equal(out.codes[0], out.codes[1])


def test_a_duration_whose_frames_do_not_divide_names_one_that_does():
    with pytest.raises(ValueError, match=r"63 frames .* not a multiple of downsample=4; a duration of 0.504 s fits"):
        QuantizedAudioEncoder(out_dim=8, duration=0.5)
    with pytest.raises(ValueError, match="expected waveforms of 8064 samples"):
        QuantizedAudioEncoder(out_dim=8, channels=[8]).reconstruction_target(torch.zeros(1, 8000))
    with pytest.raises(ValueError, match="expected 16 tokens, got 15"):
        MelDecoder(8, 16, [8, 8, 16], 64)(torch.zeros(1, 15, 8))


def test_the_pseudo_inverse_gives_back_the_mel_power_it_came_from(encoder):
    """fb.T @ (magnitudes²) = the mel power: the filterbank's pseudo-inverse, not its transpose."""
    vocoder = encoder.vocoder
    filterbank = LogMelSpectrogram(sample_rate=16000, n_fft=512, hop_length=128, n_mels=64).filterbank  # (F, M)
    power = torch.rand(filterbank.shape[0], 3, generator=torch.Generator().manual_seed(0)) + 0.5  # (F, T) positive
    mel = filterbank.T @ power
    back = filterbank.T @ vocoder.magnitudes(torch.log(mel + 1e-5)).square()
    torch.testing.assert_close(back, mel, rtol=2e-3, atol=1e-4)


def test_griffin_lim_finds_phases_for_a_real_sound_s_magnitudes(encoder):
    wave = torch.from_numpy(render_beeps({"voice": "horn", "pitch": "low", "count": 2}, np.random.default_rng(0)))
    vocoder = encoder.vocoder
    magnitude = vocoder.stft(wave[None]).abs()

    def convergence(iterations: int, momentum: float) -> float:
        gl = GriffinLim(encoder.mel, NUM_SAMPLES, iterations=iterations, momentum=momentum)
        rebuilt = vocoder.stft(gl.istft(magnitude * gl.phases(magnitude))).abs()
        return float((rebuilt - magnitude).norm() / magnitude.norm())

    first, plain, fast = convergence(1, 0.0), convergence(32, 0.0), convergence(32, 0.99)
    assert fast < plain < first and fast < 0.2  # each round nearer a consistent spectrogram; momentum faster
    with pytest.raises(ValueError, match="momentum in"):
        GriffinLim(encoder.mel, NUM_SAMPLES, momentum=1.0)


def test_a_vocoded_log_mel_still_sounds_like_its_prompt(encoder):
    rng = np.random.default_rng(3)
    specs = [{"voice": v, "pitch": p, "count": c} for v, p, c in
             [("whistle", "low", 1), ("buzz", "high", 2), ("horn", "low", 3), ("bell", "high", 2), ("chirp", "low", 3)]]
    waves = torch.from_numpy(np.stack([render_beeps(s, rng) for s in specs]))
    vocoded = encoder.vocoder(encoder.mel(waves))
    assert vocoded.shape == waves.shape and vocoded.abs().max() <= 1
    assert sound_scores(specs, trained_judge().judge(vocoded))["all"] == 1.0
