"""Content parts, as OpenAI's chat messages carry them and as the other endpoints take their items:

- a string, or `{"type": "text", "text": ...}`: text;
- `{"type": "image_url", "image_url": {"url": URL}}` (or the URL alone): an image;
- `{"type": "input_audio", "input_audio": {"data": BASE64, "format": "wav"}}`, or
  `{"type": "audio_url", "audio_url": {"url": URL}}`: a sound;
- `{"type": "video_url", "video_url": {"url": URL}}`: a clip;
- `{"modality": "image" | "audio" | "video" | "text", "data": DATA_URI_OR_TEXT}` (infinity's items).

URL: a data URI, `file:` under the server's media root, or http(s) on an allowed domain (`media.py`).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from .errors import APIError
from .fields import Fields
from .media import Media, MediaLimits, audio_part, image, load_url, media_file

PART_TYPES = ("text", "image_url", "input_audio", "audio_url", "video_url")
URL_KINDS = {"image_url": "image", "audio_url": "audio", "video_url": "video"}


def read_part(value: Any, param: str, limits: MediaLimits, max_text: int) -> tuple[str, str | Media]:
    """One part → ("text", str) or (kind, Media) (bytes not yet decoded: `materialise` does that)."""
    if isinstance(value, str):
        if len(value) > max_text:
            raise APIError(413, f"{param}: more than {max_text} characters", param=param, code="too_large")
        return "text", value
    fields = Fields(value, param)
    if "modality" in value and "type" not in value:
        modality = fields.str("modality", choices=("text", "image", "audio", "video"))
        if modality == "text":
            return "text", fields.str("data", max_length=max_text)
        return modality, load_url(fields.str("data"), modality, fields.name("data"), limits)
    kind = fields.str("type", choices=PART_TYPES)
    if kind == "text":
        return "text", fields.str("text", max_length=max_text)
    if kind == "input_audio":
        return "audio", audio_part(value.get("input_audio"), fields.name("input_audio"), limits)
    inner = value.get(kind)
    url = inner.get("url") if isinstance(inner, dict) else inner
    where = fields.name(kind) + (".url" if isinstance(inner, dict) else "")
    if url is None:
        raise APIError(400, f"{where}: required (a URL or {{'url': URL}})", param=where)
    return URL_KINDS[kind], load_url(url, URL_KINDS[kind], where, limits)


class Scratch:
    """A request's temporary folder, made on first use (text and images never need one: most requests make
    none) and removed by `close` (or on leaving a `with`)."""

    def __init__(self) -> None:
        self._path: Path | None = None

    def path(self) -> Path:
        if self._path is None:
            self._path = Path(tempfile.mkdtemp(prefix="polymodal-serve-"))
        return self._path

    def close(self) -> None:
        if self._path is not None:
            shutil.rmtree(self._path, ignore_errors=True)
            self._path = None

    def __enter__(self) -> "Scratch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def materialise(media: Media, scratch: Scratch, limits: MediaLimits) -> Any:
    """What a model's processor reads: a PIL image, or the path of a checked sound or clip file (written in
    `scratch`'s folder)."""
    return image(media, limits) if media.kind == "image" else media_file(media, scratch.path(), limits)
