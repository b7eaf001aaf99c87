"""Reading and writing video and audio files with PyAV (FFmpeg inside the wheel).

Readers return NumPy arrays and raise `DataError` naming the file for anything they cannot read:
missing, empty, corrupt or truncated files, files without the stream asked for, undecodable packets.
Writers are what the built-in benchmark and the tests use to make real media files.
"""

from __future__ import annotations

import wave as wave_module
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from ..errors import DataError

VIDEO_SAMPLING = ("uniform", "segment")

# container suffix → (video codec, pixel format, audio codec or None). Sound is Opus, not AAC: FFmpeg's
# AAC encoder puts 1024 samples of priming before the sound that PyAV's decoder does not trim, so picture
# and sound would be 64 ms (at 16 kHz) out of sync; Opus signals its pre-skip and decodes in place.
VIDEO_FORMATS = {
    ".mp4": ("libx264", "yuv420p", "libopus"),
    ".m4v": ("mpeg4", "yuv420p", "aac"),  # MPEG-4 part 2; its (ipod) muxer takes no Opus: AAC, primed as above
    ".mkv": ("libx264", "yuv420p", "libopus"),
    ".webm": ("libvpx-vp9", "yuv420p", "libopus"),
    ".gif": ("gif", "rgb8", None),
}
# suffix → audio codec
AUDIO_FORMATS = {".wav": "pcm_s16le", ".flac": "flac", ".mp3": "libmp3lame", ".ogg": "libopus",
                 ".opus": "libopus", ".m4a": "aac"}
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


def _open(path: str | Path) -> av.container.InputContainer:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    try:
        return av.open(str(path), mode="r")
    except (av.FFmpegError, ValueError, OSError) as error:
        raise DataError(f"{path}: not a readable media file ({_reason(error)})") from None


def _reason(error: Exception) -> str:
    text = str(error)
    return text.split(": '")[0] if ": '" in text else text  # drop FFmpeg's repeat of the path


def probe(path: str | Path, kind: str) -> None:
    """Cheaply check that `path` opens and its first `kind` ("video" or "audio") frame decodes.

    Raises:
        DataError: naming the file and what is wrong (corrupt data later in the file is found when the
            clip is read).
    """
    with _open(path) as container:
        streams = container.streams.video if kind == "video" else container.streams.audio
        if not streams:
            raise DataError(f"{path}: has no {kind} stream")
        try:
            for _ in container.decode(streams[0]):
                return
        except av.FFmpegError as error:
            raise DataError(f"{path}: corrupt {kind} data ({_reason(error)})") from None
        raise DataError(f"{path}: the {kind} stream has no frames")


# ----------------------------------------------------------------------------------------- video

def read_video(
    path: str | Path,
    *,
    num_frames: int = 8,
    fps: float | None = None,
    sampling: str = "uniform",
    size: int | tuple[int, int] | None = None,
    generator: np.random.Generator | None = None,
) -> np.ndarray:
    """Decode a video file and sample a fixed number of RGB frames.

    Args:
        path: MP4 / WebM / GIF / anything FFmpeg reads.
        num_frames: frames returned (repeated when the clip is shorter).
        fps: first resample the clip to this rate (each target time takes the latest frame at or
            before it); None keeps the file's own frames.
        sampling: `uniform`: `num_frames` spread over the whole clip (with a generator, a random frame
            from each of `num_frames` equal segments, as TSN does); `segment`: `num_frames`
            consecutive frames (at `fps`) from a random start with a generator, else the centred one.
        size: output (height, width), or one int for square frames; None keeps the file's size.
        generator: randomness for training-time sampling; None samples deterministically.

    Returns:
        (num_frames, H, W, 3) uint8.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames: expected at least 1, got {num_frames}")
    if sampling not in VIDEO_SAMPLING:  # before decoding: a bad setting should not cost a decode
        raise ValueError(f"sampling: expected one of {', '.join(VIDEO_SAMPLING)}, got {sampling!r}")
    frames, times = decode_video(path, size=size)
    return sample_frames(frames, times, num_frames=num_frames, fps=fps, sampling=sampling, generator=generator)


_SMALL_FRAME = 320 * 240  # pixels; up to this size one decoding thread is fastest (workers parallelise files)


def decode_video(path: str | Path, *, size: int | tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every frame of a video file, for caching: (N, H, W, 3) uint8 and their times (N,) in seconds."""
    height, width = (size, size) if isinstance(size, int) else (size or (None, None))
    frames, times = [], []
    with _open(path) as container:
        if not container.streams.video:
            raise DataError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        if (stream.codec_context.width or 0) * (stream.codec_context.height or 0) <= _SMALL_FRAME:
            stream.codec_context.thread_count = 1  # frame threads only add latency to small clips
        try:
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24", width=width, height=height))
                times.append(frame.time if frame.time is not None else len(times))
        except av.FFmpegError as error:
            raise DataError(f"{path}: corrupt video data after {len(frames)} frames ({_reason(error)})") from None
    if not frames:
        raise DataError(f"{path}: the video stream has no frames")
    return np.stack(frames), np.asarray(times, dtype=np.float64)


def sample_frames(frames: np.ndarray, times: np.ndarray, *, num_frames: int = 8, fps: float | None = None,
                  sampling: str = "uniform", generator: np.random.Generator | None = None) -> np.ndarray:
    """The frames `read_video` would return, taken from `decode_video`'s output."""
    if sampling not in VIDEO_SAMPLING:
        raise ValueError(f"sampling: expected one of {', '.join(VIDEO_SAMPLING)}, got {sampling!r}")
    return frames[_frame_order(times, num_frames, fps, sampling, generator)]


class MediaCache:
    """Decoded media kept in memory up to `max_bytes` (the oldest entries leave first), so every epoch
    after the first skips decoding. Each loader worker holds its own copy.

    Args:
        max_bytes: memory budget; 0 disables caching.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self.entries: dict[str, tuple[np.ndarray, ...]] = {}

    def get(self, key: str, make: Callable[[], tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
        if key in self.entries:
            return self.entries[key]
        value = make()
        size = sum(a.nbytes for a in value)
        if size <= self.max_bytes:
            while self.used + size > self.max_bytes and self.entries:
                oldest = next(iter(self.entries))
                self.used -= sum(a.nbytes for a in self.entries.pop(oldest))
            self.entries[key] = value
            self.used += size
        return value


def _frame_order(times: np.ndarray, num_frames: int, fps: float | None, sampling: str,
                 generator: np.random.Generator | None) -> np.ndarray:
    """Indices into the decoded frames (timestamps `times`, seconds) to return, in order."""
    index = np.arange(len(times))
    if fps is not None:  # resample the clip to `fps`: the latest frame at or before each target time
        step = np.median(np.diff(times)) if len(times) > 1 else 1.0 / fps
        targets = np.arange(times[0], times[-1] + step - 1e-9, 1.0 / fps)
        index = np.clip(np.searchsorted(times, targets + 1e-6, side="right") - 1, 0, len(times) - 1)
    n = len(index)
    if sampling == "segment":
        if n <= num_frames:
            picks = np.minimum(np.arange(num_frames), n - 1)
        else:
            start = int(generator.integers(0, n - num_frames + 1)) if generator is not None else (n - num_frames) // 2
            picks = np.arange(start, start + num_frames)
    elif generator is None:
        picks = np.linspace(0, n - 1, num_frames).round().astype(int)
    else:  # one random frame in each of num_frames equal segments
        edges = np.linspace(0, n, num_frames + 1)
        picks = np.minimum(np.floor(edges[:-1] + generator.random(num_frames) * np.diff(edges)).astype(int), n - 1)
    return index[picks]


def write_video(
    path: str | Path,
    frames: np.ndarray,
    *,
    fps: float = 8.0,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    codec: str | None = None,
    lossless: bool = False,
) -> Path:
    """Write RGB frames (and optionally a mono or stereo audio track) to a video file.

    The container and default codecs follow the suffix (see `VIDEO_FORMATS`): .mp4 H.264 + Opus,
    .m4v MPEG-4 part 2 + Opus, .webm VP9 + Opus, .mkv H.264 + Opus, .gif (no audio; 256 fixed colours,
    3-3-2 bits per channel, so colours come back coarse).

    Args:
        path: output file.
        frames: (T, H, W, 3) uint8; H and W must be even except for GIF.
        fps: frame rate.
        audio: float waveform in [-1, 1], (S,) or (channels, S).
        sample_rate: of `audio`.
        codec: override the video codec.
        lossless: .mp4 / .mkv only: H.264 in RGB without loss (`libx264rgb`, qp 0), every pixel kept.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_FORMATS:
        raise ValueError(f"{path}: unknown video suffix; known: {', '.join(VIDEO_FORMATS)}")
    video_codec, pixel_format, audio_codec = VIDEO_FORMATS[suffix]
    video_codec = codec or video_codec
    if lossless:
        if suffix not in (".mp4", ".mkv"):
            raise ValueError(f"{path}: lossless video is written as .mp4 or .mkv (H.264 in RGB), not {suffix}")
        video_codec, pixel_format = "libx264rgb", "rgb24"
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames: expected (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    _, height, width, _ = frames.shape
    if pixel_format == "yuv420p" and (height % 2 or width % 2):
        raise ValueError(f"{path}: {video_codec} needs an even height and width, got {height}x{width}")
    if audio is not None and audio_codec is None:
        raise ValueError(f"{path}: {suffix} files carry no audio track")
    rate = Fraction(fps).limit_denominator(1001)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(video_codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pixel_format
        stream.options = _video_options(video_codec)
        audio_stream = _add_audio_stream(container, audio_codec, audio, sample_rate) if audio is not None else None
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = index
            frame.time_base = 1 / rate
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))  # flush: H.264 and VP9 hold frames back
        if audio_stream is not None:
            _encode_audio(container, audio_stream, audio, sample_rate)
    return path


def _video_options(codec: str) -> dict[str, str]:
    if codec == "libx264rgb":  # only ever lossless here
        return {"qp": "0", "preset": "veryfast"}
    if codec == "libx264":
        return {"crf": "20", "preset": "veryfast"}
    if codec in ("libvpx", "libvpx-vp9"):
        return {"crf": "30", "b": "0", "deadline": "realtime", "cpu-used": "8"}
    if codec == "mpeg4":
        return {"qscale": "3"}
    return {}


# ----------------------------------------------------------------------------------------- audio

def read_audio(
    path: str | Path,
    *,
    sample_rate: int = 16000,
    mono: bool = True,
    duration: float | None = None,
    generator: np.random.Generator | None = None,
) -> np.ndarray:
    """Decode the first audio stream of an audio or video file, resampled.

    Args:
        path: WAV / FLAC / MP3 / Ogg / M4A, or a video file with an audio track.
        sample_rate: output rate in Hz.
        mono: mix all channels down to one.
        duration: seconds; longer audio is cropped (a random window with a generator, else the start),
            shorter audio is zero-padded at the end. None keeps the whole file.
        generator: randomness for training-time crops.

    Returns:
        (channels, samples) float32 in [-1, 1]; channels is 1 when `mono`.
    """
    wave = _read_pcm_wav(path, sample_rate) if Path(path).suffix.lower() == ".wav" else None
    if wave is not None:
        if mono:
            wave = wave.mean(axis=0, keepdims=True)
        return crop_or_pad(wave, int(round(duration * sample_rate)), generator) if duration is not None else wave
    chunks = []
    with _open(path) as container:
        if not container.streams.audio:
            raise DataError(f"{path}: has no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", rate=sample_rate)  # mono: the channel mean, below
        try:
            for frame in container.decode(stream):
                chunks.extend(out.to_ndarray() for out in resampler.resample(frame))
            chunks.extend(out.to_ndarray() for out in resampler.resample(None))
        except av.FFmpegError as error:
            raise DataError(f"{path}: corrupt audio data ({_reason(error)})") from None
    if not chunks:
        raise DataError(f"{path}: the audio stream has no samples")
    wave = np.concatenate(chunks, axis=1).astype(np.float32)  # (C, S)
    if mono:  # the plain mean of the channels (FFmpeg's own down-mix would scale by 1/sqrt 2)
        wave = wave.mean(axis=0, keepdims=True)
    if duration is not None:
        wave = crop_or_pad(wave, int(round(duration * sample_rate)), generator)
    return wave


def _read_pcm_wav(path: str | Path, sample_rate: int) -> np.ndarray | None:
    """(C, S) float32 from a 16-bit PCM WAV already at `sample_rate` (the common case, read without
    FFmpeg, several times faster); None for any other WAV, which FFmpeg then decodes and resamples."""
    try:
        with wave_module.open(str(path), "rb") as file:
            if file.getsampwidth() != 2 or file.getframerate() != sample_rate or file.getnframes() == 0:
                return None
            channels, data = file.getnchannels(), file.readframes(file.getnframes())
    except (wave_module.Error, EOFError, OSError):
        return None  # not plain PCM (or broken): FFmpeg decodes it or names what is wrong
    pcm = np.frombuffer(data, dtype="<i2")
    if pcm.size % channels:
        return None
    return (pcm.reshape(-1, channels).T / 32768.0).astype(np.float32)


def crop_or_pad(wave: np.ndarray, length: int, generator: np.random.Generator | None = None) -> np.ndarray:
    """(C, S) → (C, length): a window of longer audio (random with a generator, else the start), or
    shorter audio followed by zeros."""
    samples = wave.shape[1]
    if samples >= length:
        start = int(generator.integers(0, samples - length + 1)) if generator is not None else 0
        return wave[:, start:start + length]
    return np.pad(wave, ((0, 0), (0, length - samples)))


def write_audio(path: str | Path, wave: np.ndarray, sample_rate: int, *, codec: str | None = None) -> Path:
    """Write a float waveform ((S,) or (channels, S), values in [-1, 1]) as WAV, FLAC, MP3, Ogg or M4A."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in AUDIO_FORMATS:
        raise ValueError(f"{path}: unknown audio suffix; known: {', '.join(AUDIO_FORMATS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = _add_audio_stream(container, codec or AUDIO_FORMATS[suffix], wave, sample_rate)
        _encode_audio(container, stream, wave, sample_rate)
    return path


def _planar(wave: np.ndarray) -> np.ndarray:
    wave = np.asarray(wave, dtype=np.float32)
    wave = wave[None] if wave.ndim == 1 else wave
    if wave.ndim != 2 or wave.shape[0] not in (1, 2):
        raise ValueError(f"audio: expected (S,) or (channels, S) with 1 or 2 channels, got {wave.shape}")
    return np.ascontiguousarray(np.clip(wave, -1.0, 1.0))


def _add_audio_stream(container: av.container.OutputContainer, codec: str, wave: np.ndarray, sample_rate: int):
    channels = _planar(wave).shape[0]
    rate = sample_rate
    if codec in ("libopus", "opus") and rate not in _OPUS_RATES:
        rate = 48000  # Opus only encodes these rates; the frame is resampled in _encode_audio
    return container.add_stream(codec, rate=rate, layout="mono" if channels == 1 else "stereo")


def _encode_audio(container: av.container.OutputContainer, stream, wave: np.ndarray, sample_rate: int) -> None:
    planar = _planar(wave)
    frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout="mono" if planar.shape[0] == 1 else "stereo")
    frame.sample_rate = sample_rate
    frames = [frame]
    if stream.rate != sample_rate:
        resampler = av.AudioResampler(format="fltp", layout=frame.layout.name, rate=stream.rate)
        frames = [*resampler.resample(frame), *resampler.resample(None)]
    for part in frames:
        container.mux(stream.encode(part))  # the encoder re-chunks to its own frame size
    container.mux(stream.encode(None))
