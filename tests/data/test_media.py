"""Video and audio files: every supported format round-trips; bad files fail naming the file."""

import numpy as np
import pytest

from polymodal.data import media
from polymodal.data.media import _frame_order, crop_or_pad, read_audio, read_video, write_audio, write_video
from polymodal.errors import DataError

RATE = 16000


def _moving_square(frames: int = 16, size: int = 32) -> np.ndarray:
    """A white 8 px square moving left to right over grey, one frame per 1.5 px."""
    video = np.full((frames, size, size, 3), 96, dtype=np.uint8)
    for t in range(frames):
        x = int(round(t * (size - 8) / (frames - 1)))
        video[t, 12:20, x:x + 8] = 255
    return video


def _square_x(frame: np.ndarray) -> float:
    bright = frame.mean(axis=-1) > 180  # (H, W)
    return float(np.nonzero(bright)[1].mean())


def _tone(freq: float, seconds: float = 1.0, rate: int = RATE) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)).astype(np.float32)


def _peak_hz(wave: np.ndarray, rate: int = RATE) -> float:
    spectrum = np.abs(np.fft.rfft(wave))
    return float(np.fft.rfftfreq(len(wave), 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize("suffix", [".mp4", ".m4v", ".webm", ".gif"])
def test_video_round_trip_keeps_motion_and_colour(tmp_path, suffix):
    clip = _moving_square()
    path = write_video(tmp_path / f"clip{suffix}", clip, fps=8)
    frames = read_video(path, num_frames=16)
    assert frames.shape == (16, 32, 32, 3) and frames.dtype == np.uint8
    xs = [_square_x(f) for f in frames]
    expected = [_square_x(f) for f in clip]
    np.testing.assert_allclose(xs, expected, atol=1.0)  # each frame decoded in place and in order
    if suffix != ".gif":  # GIF writes 256 fixed colours (3-3-2 bits per channel): grey comes back bluish
        assert np.abs(frames[0, 2, 2].astype(int) - 96).max() < 12  # the background colour survives


def test_uniform_sampling_and_resizing(tmp_path):
    path = write_video(tmp_path / "clip.mp4", _moving_square(), fps=8)
    frames = read_video(path, num_frames=4, size=16)
    assert frames.shape == (4, 16, 16, 3)
    xs = [_square_x(f) for f in frames]
    assert xs == sorted(xs) and xs[-1] - xs[0] > 8  # first to last frame: the square crosses the picture


def test_frame_order_rules():
    times = np.arange(16) / 8.0  # 16 frames at 8 fps
    np.testing.assert_array_equal(_frame_order(times, 4, None, "uniform", None), [0, 5, 10, 15])
    np.testing.assert_array_equal(_frame_order(times, 4, 4.0, "segment", None), [4, 6, 8, 10])  # centred, 4 fps
    np.testing.assert_array_equal(_frame_order(times, 20, None, "segment", None)[-5:], [15] * 5)  # short: repeat
    rng = np.random.default_rng(0)
    for _ in range(20):
        picks = _frame_order(times, 4, None, "uniform", rng)  # TSN: one random frame per quarter
        assert all(4 * i <= p < 4 * (i + 1) for i, p in enumerate(picks))
        start = _frame_order(times, 4, None, "segment", rng)
        np.testing.assert_array_equal(np.diff(start), [1, 1, 1])
    with pytest.raises(ValueError, match="sampling: expected one of uniform, segment"):
        read_video("x.mp4", sampling="dense")


@pytest.mark.parametrize("suffix, exact", [(".wav", True), (".flac", True), (".mp3", False), (".ogg", False)])
def test_audio_round_trip(tmp_path, suffix, exact):
    wave = _tone(440.0)
    path = write_audio(tmp_path / f"tone{suffix}", wave, RATE)
    back = read_audio(path, sample_rate=RATE)
    assert back.shape[0] == 1 and back.dtype == np.float32
    if exact:
        np.testing.assert_allclose(back[0], wave, atol=1e-4)
    else:  # lossy codecs pad a little and change samples, not the pitch
        assert RATE <= back.shape[1] <= RATE + 2048
        assert abs(_peak_hz(back[0, :RATE]) - 440.0) < 3


def test_resampling_and_mono_mix_down(tmp_path):
    stereo = np.stack([_tone(300.0, rate=22050), _tone(1200.0, rate=22050)])
    path = write_audio(tmp_path / "stereo.wav", stereo, 22050)
    both = read_audio(path, sample_rate=RATE, mono=False)
    assert both.shape == (2, RATE)
    assert abs(_peak_hz(both[0]) - 300) < 3 and abs(_peak_hz(both[1]) - 1200) < 3
    mono = read_audio(path, sample_rate=RATE)
    assert mono.shape == (1, RATE)
    spectrum = np.abs(np.fft.rfft(mono[0]))
    freqs = np.fft.rfftfreq(RATE, 1 / RATE)
    top_two = sorted(freqs[np.argsort(spectrum)[-2:]])
    np.testing.assert_allclose(top_two, [300, 1200], atol=3)  # the mix keeps both channels


def test_wav_fast_path_reads_what_ffmpeg_reads(tmp_path, monkeypatch):
    stereo = np.stack([_tone(300.0), _tone(1200.0)]) * 0.7
    path = write_audio(tmp_path / "stereo.wav", stereo, RATE)
    fast = [read_audio(path, mono=False), read_audio(path), read_audio(path, duration=0.5)]
    monkeypatch.setattr(media, "_read_pcm_wav", lambda *_: None)  # FFmpeg for every file
    slow = [read_audio(path, mono=False), read_audio(path), read_audio(path, duration=0.5)]
    for a, b in zip(fast, slow):
        assert a.shape == b.shape and a.dtype == b.dtype == np.float32
        np.testing.assert_allclose(a, b, atol=1e-6)
    monkeypatch.undo()
    for name, content in {"empty.wav": b"", "text.wav": b"RIFF but not really\n" * 20}.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError, match=name):
            read_audio(tmp_path / name)


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_the_audio_track_of_a_video(tmp_path, suffix):
    path = write_video(tmp_path / f"av{suffix}", _moving_square(), fps=8, audio=_tone(660.0, 2.0), sample_rate=RATE)
    assert read_video(path, num_frames=2).shape == (2, 32, 32, 3)
    track = read_audio(path, sample_rate=RATE, duration=1.5)
    assert track.shape == (1, int(1.5 * RATE))
    assert abs(_peak_hz(track[0]) - 660.0) < 3
    # in sync with the pictures: a tone that starts at 0.5 s is heard at 0.5 s
    late = np.concatenate([np.zeros(RATE // 2, np.float32), _tone(660.0, 0.5)])
    path = write_video(tmp_path / f"late{suffix}", _moving_square(), fps=8, audio=late, sample_rate=RATE)
    onset = np.flatnonzero(np.abs(read_audio(path, sample_rate=RATE)[0]) > 0.1)[0] / RATE
    assert abs(onset - 0.5) < 0.01


def test_crop_or_pad():
    wave = np.arange(10, dtype=np.float32)[None]
    np.testing.assert_array_equal(crop_or_pad(wave, 4), [[0, 1, 2, 3]])
    np.testing.assert_array_equal(crop_or_pad(wave, 12), [[*range(10), 0, 0]])
    window = crop_or_pad(wave, 4, np.random.default_rng(3))
    assert window.shape == (1, 4) and np.all(np.diff(window[0]) == 1)


def test_bad_files_name_the_file(tmp_path):
    good = write_video(tmp_path / "good.mp4", _moving_square(), fps=8)
    cases = {
        "missing.mp4": None,
        "empty.mp4": b"",
        "text.mp4": b"this is not a video\n" * 20,
        "truncated.mp4": good.read_bytes()[:300],
    }
    for name, content in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError, match=name):
            read_video(tmp_path / name)
    tone = write_audio(tmp_path / "tone.wav", _tone(440.0), RATE)
    with pytest.raises(DataError, match="tone.wav: has no video stream"):
        read_video(tone)
    gif = write_video(tmp_path / "clip.gif", _moving_square(), fps=8)
    with pytest.raises(DataError, match="clip.gif: has no audio stream"):
        read_audio(gif)
    with pytest.raises(ValueError, match="even height and width"):
        write_video(tmp_path / "odd.mp4", np.zeros((2, 31, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="carry no audio"):
        write_video(tmp_path / "x.gif", _moving_square(), audio=_tone(440.0))


@pytest.mark.parametrize("damage", ["truncated", "zeroed"])
def test_corrupt_video_data_is_a_data_error_naming_the_file(tmp_path, damage):
    data = write_video(tmp_path / "good.mp4", _moving_square(), fps=8).read_bytes()
    middle = len(data) // 2
    if damage == "truncated":  # an interrupted copy or download
        data = data[:middle]
    else:  # a stretch of the coded frames zeroed
        data = data[:middle] + bytes(400) + data[middle + 400:]
    (tmp_path / "broken.mp4").write_bytes(data)
    with pytest.raises(DataError, match="broken.mp4: not a readable media file"):
        read_video(tmp_path / "broken.mp4", num_frames=4)


def test_processors_cache_decoded_media_within_their_budget(tmp_path):
    import torch

    from polymodal.data.media import MediaCache
    from polymodal.modalities.audio.processor import AudioProcessor
    from polymodal.modalities.video.processor import VideoProcessor

    clip = write_video(tmp_path / "c.mp4", _moving_square(), fps=8, audio=_tone(440.0, 2.0), sample_rate=RATE)
    video, audio = VideoProcessor(image_size=16, num_frames=4), AudioProcessor(duration=1.0)
    first_v, first_a = video(clip), audio(clip)
    clip.unlink()  # a cached clip no longer needs its file
    torch.testing.assert_close(video(clip), first_v)
    torch.testing.assert_close(audio(clip), first_a)
    assert first_v.shape == (4, 3, 16, 16) and first_a.shape == (RATE,)
    with pytest.raises(DataError, match="c.mp4: no such file"):
        VideoProcessor(image_size=16, num_frames=4, cache_mb=0)(clip)
    cache = MediaCache(max_bytes=100)
    for key in "abc":
        cache.get(key, lambda: (np.zeros(40, np.uint8),))
    assert list(cache.entries) == ["b", "c"] and cache.used == 80  # the oldest left to stay in budget
    cache.get("big", lambda: (np.zeros(500, np.uint8),))
    assert "big" not in cache.entries  # larger than the whole budget: returned, not kept
