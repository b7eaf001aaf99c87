"""Log-mel spectrograms for the audio encoders: the signal code lives in `data/spectrogram.py` (the data
layer, so the sound judge there can use it too); re-exported here where the encoders have always found it."""

from ...data.spectrogram import LogMelSpectrogram, hz_to_mel, mel_centre_hz, mel_filterbank, mel_to_hz

__all__ = ["LogMelSpectrogram", "hz_to_mel", "mel_centre_hz", "mel_filterbank", "mel_to_hz"]
