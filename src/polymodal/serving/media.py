"""Media in requests: data URIs, files under `--media-root`, and http(s) URLs of allowed domains, checked
before a model sees them.

Each part becomes what the model's processors read: a PIL image, or a file (sound, clip) in the request's
temporary folder. Everything is bounded: bytes per item, pixels, seconds of sound, frames of a clip; a URL
is fetched only from an allowed domain, never from a private, loopback or link-local address (redirects
included: each hop is checked), with a timeout and a size cap.
"""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import os
import socket
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import httpx
from PIL import Image

from .errors import APIError

KINDS = ("image", "audio", "video")
SUFFIXES = {"audio": {"wav": ".wav", "mp3": ".mp3", "flac": ".flac", "ogg": ".ogg", "m4a": ".m4a"},
            "video": {"mp4": ".mp4", "webm": ".webm", "mkv": ".mkv", "mov": ".mov", "avi": ".avi", "gif": ".gif"}}


@dataclass(frozen=True)
class MediaLimits:
    """What one item may be: bytes, pixels (an image or a clip's frame), seconds of sound, frames of a clip.

    `media_root`: the folder `file://` URLs may name (None: no files); `allow_domains`: hosts http(s) URLs
    may name (a subdomain of one counts); `fetch_timeout`: seconds for each step of a URL's download."""

    max_bytes: int = 10 * 2**20
    max_pixels: int = 4096 * 4096
    max_audio_seconds: float = 60.0
    max_video_frames: int = 600
    media_root: Path | None = None
    allow_domains: tuple[str, ...] = ()
    fetch_timeout: float = 10.0
    max_redirects: int = 3
    transport: Any = None  # an httpx transport for fetching (tests give a mock; None: the network)


@dataclass
class Media:
    """One item: its kind and bytes, where they came from (for messages), the format's file suffix."""

    kind: str
    data: bytes
    source: str
    suffix: str = ""
    _files: list[Path] = field(default_factory=list, repr=False)


def _too_large(param: str, what: str) -> APIError:
    return APIError(413, f"{param}: {what}", param=param, code="too_large")


def decode_data_uri(uri: str, param: str, max_bytes: int) -> tuple[str, bytes]:
    """`data:MIME;base64,...` → (mime type, bytes)."""
    head, comma, payload = uri.partition(",")
    if not comma or not head.startswith("data:") or not head.endswith(";base64"):
        raise APIError(400, f"{param}: expected a data URI 'data:<mime>;base64,<data>'", param=param)
    if len(payload) > max_bytes * 4 // 3 + 4:
        raise _too_large(param, f"more than {max_bytes} bytes")
    return head[5:-7].lower(), b64decode(payload, param)


def b64decode(payload: str, param: str) -> bytes:
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, f"{param}: not valid base64", param=param) from None


def _public(host: str) -> bool:
    """Every address `host` resolves to is a public one."""
    try:
        infos = socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError, ValueError):
        return False
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if not address.is_global or address.is_multicast:
            return False
    return bool(infos)


def _allowed(host: str, domains: tuple[str, ...]) -> bool:
    host = host.lower().rstrip(".")
    return any(host == d or host.endswith("." + d) for d in domains)


def fetch_url(url: str, param: str, limits: MediaLimits) -> bytes:
    """The bytes at an http(s) URL of an allowed domain; each redirect is checked as the first URL was."""
    for _ in range(limits.max_redirects + 1):
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        if parts.scheme not in ("http", "https") or not host:
            raise APIError(400, f"{param}: expected an http(s) URL, got {url[:80]!r}", param=param)
        if not _allowed(host, limits.allow_domains):
            raise APIError(400, f"{param}: {host!r} is not an allowed media domain "
                                f"(the server's --allow-media-domains: {', '.join(limits.allow_domains) or 'none'})",
                           param=param, code="media_domain_not_allowed")
        if not _public(host):
            raise APIError(400, f"{param}: {host!r} does not resolve to public addresses only", param=param,
                           code="private_address")
        try:
            with httpx.Client(transport=limits.transport, timeout=limits.fetch_timeout, follow_redirects=False) as client, \
                    client.stream("GET", url) as response:
                if response.is_redirect:
                    url = urllib.parse.urljoin(url, response.headers.get("location", ""))
                    continue
                if response.status_code != 200:
                    raise APIError(400, f"{param}: fetching {url[:80]!r} gave HTTP {response.status_code}", param=param)
                chunks, size = [], 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > limits.max_bytes:
                        raise _too_large(param, f"more than {limits.max_bytes} bytes at {url[:80]!r}")
                    chunks.append(chunk)
                return b"".join(chunks)
        except httpx.HTTPError as error:
            raise APIError(400, f"{param}: fetching {url[:80]!r} failed ({type(error).__name__})", param=param) from None
    raise APIError(400, f"{param}: more than {limits.max_redirects} redirects", param=param)


def read_file_url(url: str, param: str, limits: MediaLimits) -> bytes:
    """A `file://` URL's bytes, only inside the media root (symbolic links resolved first)."""
    if limits.media_root is None:
        raise APIError(400, f"{param}: file URLs are off (start the server with --media-root DIR)", param=param,
                       code="file_urls_off")
    parts = urllib.parse.urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise APIError(400, f"{param}: a file URL names no host (file:///PATH or file:RELATIVE)", param=param)
    raw, root = urllib.parse.unquote(parts.path), limits.media_root.resolve()
    try:
        path = (Path(raw) if raw.startswith("/") else root / raw).resolve()
    except (OSError, ValueError, RuntimeError):
        raise APIError(400, f"{param}: not a usable path", param=param) from None
    if path != root and root not in path.parents:
        raise APIError(400, f"{param}: outside the media root", param=param, code="outside_media_root")
    if not path.is_file():
        raise APIError(400, f"{param}: no such file under the media root", param=param)
    if path.stat().st_size > limits.max_bytes:
        raise _too_large(param, f"more than {limits.max_bytes} bytes")
    return path.read_bytes()


def load_url(url: object, kind: str, param: str, limits: MediaLimits) -> Media:
    """An `image_url` / `video_url` / `audio_url` value: a data URI, a file URL or an http(s) URL."""
    if not isinstance(url, str) or not url:
        raise APIError(400, f"{param}: expected a URL string", param=param)
    scheme = url.split(":", 1)[0].lower()
    if scheme == "data":
        mime, data = decode_data_uri(url, param, limits.max_bytes)
        suffix = "." + mime.split("/", 1)[-1].split("+", 1)[0] if "/" in mime else ""
    elif scheme == "file":
        data = read_file_url(url, param, limits)
        suffix = Path(urllib.parse.urlsplit(url).path).suffix
    elif scheme in ("http", "https"):
        data = fetch_url(url, param, limits)
        suffix = Path(urllib.parse.urlsplit(url).path).suffix
    else:
        raise APIError(400, f"{param}: expected a data:, file: or http(s): URL, got scheme {scheme!r}", param=param)
    if len(data) > limits.max_bytes:
        raise _too_large(param, f"more than {limits.max_bytes} bytes")
    return Media(kind, data, param, suffix if len(suffix) <= 6 else "")


def image(media: Media, limits: MediaLimits) -> Image.Image:
    """The item as an RGB image, its size checked before its pixels are decoded."""
    try:
        with Image.open(io.BytesIO(media.data)) as opened:
            width, height = opened.size
            if width * height > limits.max_pixels:
                raise _too_large(media.source, f"{width}×{height} pixels, more than {limits.max_pixels}")
            return opened.convert("RGB")
    except APIError:
        raise
    except Image.DecompressionBombError:
        raise _too_large(media.source, "more pixels than PIL's decompression-bomb limit") from None
    except Exception as error:  # PIL raises many kinds on corrupt data
        raise APIError(400, f"{media.source}: not a readable image ({type(error).__name__})", param=media.source,
                       code="invalid_image") from None


def media_file(media: Media, folder: Path, limits: MediaLimits) -> Path:
    """The item written to `folder`, after its stream is decoded within the limits (seconds of sound,
    frames and pixels of a clip): the path the model's processors read."""
    suffix = media.suffix if media.suffix.lower() in {*SUFFIXES["audio"].values(), *SUFFIXES["video"].values()} else ""
    handle, name = tempfile.mkstemp(suffix=suffix or ".bin", dir=folder)
    with os.fdopen(handle, "wb") as out:
        out.write(media.data)
    _check_stream(Path(name), media, limits)
    return Path(name)


def _check_stream(path: Path, media: Media, limits: MediaLimits) -> None:
    what = "sound" if media.kind == "audio" else "clip"
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            streams = container.streams.audio if media.kind == "audio" else container.streams.video
            if not streams:
                raise APIError(400, f"{media.source}: no {media.kind} stream in it", param=media.source,
                               code=f"invalid_{media.kind}")
            seconds, frames = 0.0, 0
            for frame in container.decode(streams[0]):
                if media.kind == "audio":
                    seconds += frame.samples / max(frame.sample_rate or 1, 1)
                    if seconds > limits.max_audio_seconds:
                        raise _too_large(media.source, f"more than {limits.max_audio_seconds:g} seconds of sound")
                else:
                    frames += 1
                    if frame.width * frame.height > limits.max_pixels:
                        raise _too_large(media.source, f"frames of {frame.width}×{frame.height} pixels")
                    if frames > limits.max_video_frames:
                        raise _too_large(media.source, f"more than {limits.max_video_frames} frames")
            if seconds == 0 and frames == 0:
                raise APIError(400, f"{media.source}: the {what} has no frames", param=media.source,
                               code=f"invalid_{media.kind}")
    except APIError:
        raise
    except Exception as error:  # FFmpeg's errors on corrupt or unknown data
        raise APIError(400, f"{media.source}: not a readable {what} ({type(error).__name__})", param=media.source,
                       code=f"invalid_{media.kind}") from None


def audio_part(value: object, param: str, limits: MediaLimits) -> Media:
    """OpenAI's `input_audio` value: {"data": base64, "format": "wav" | "mp3" | ...}."""
    if not isinstance(value, dict) or not isinstance(value.get("data"), str):
        raise APIError(400, f"{param}: expected {{'data': <base64>, 'format': 'wav'}}", param=param)
    fmt = value.get("format", "wav")
    if not isinstance(fmt, str) or fmt not in SUFFIXES["audio"]:
        raise APIError(400, f"{param}.format: expected one of {', '.join(SUFFIXES['audio'])}, got {str(fmt)[:40]!r}",
                       param=f"{param}.format")
    if len(value["data"]) > limits.max_bytes * 4 // 3 + 4:
        raise _too_large(param, f"more than {limits.max_bytes} bytes")
    return Media("audio", b64decode(value["data"], f"{param}.data"), param, SUFFIXES["audio"][fmt])
