"""WebDataset shards: a manifest written as tar files, and tar files read back as records.

A shard is a plain tar file; the members of one sample share a key (the part of the name before the
first dot): `000000042.json` holds the record (its text fields, its id), `000000042.image.png`,
`000000042.audio.wav` and `000000042.video.mp4` hold the media bytes as they were on disk. Shards made
by other tools (img2dataset's `.jpg` + `.txt` + `.json`) read as well: an image, sound or video member
by its extension, `.txt` as the `text` field and `.cls` as the `label`.

`polymodal data shard` writes them (`write_shards`); training streams them (`stream.py`); validation and
test splits given as shards are read whole into memory (`read_shard_records`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import DataError

INDEX = "shards.json"  # what `write_shards` writes beside the shards: the sample count of each
SHARD_NAME = "shard-{:06d}.tar"
MEDIA = ("image", "video", "audio")  # the record fields that hold media (as `manifest.MEDIA_FIELDS`)
# a member's extension → the record field it fills (other tools' shards name media by extension alone)
EXTENSION_FIELDS = {
    **dict.fromkeys(("png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff"), "image"),
    **dict.fromkeys(("wav", "flac", "mp3", "ogg", "opus", "m4a"), "audio"),
    **dict.fromkeys(("mp4", "m4v", "mkv", "webm", "avi", "mov"), "video"),
}


class MediaBytes(bytes):
    """A media file's bytes, read from a shard, with the extension it had (`.png`, `.wav`) and its place
    (`URL#KEY.MEMBER`): a record field holds one where a manifest's holds a path."""

    suffix: str
    name: str

    def __new__(cls, data: bytes, suffix: str, name: str = "") -> "MediaBytes":
        value = super().__new__(cls, data)
        value.suffix, value.name = suffix, name
        return value

    def __reduce__(self):  # to loader workers and back, with the suffix and the name
        return MediaBytes, (bytes(self), self.suffix, self.name)


def is_shard_pattern(value: Any) -> bool:
    """Whether a `data.<split>` value names tar shards (`DIR/shard-{000000..000009}.tar`, a `::` list of
    them, `pipe:` or `http(s)://` URLs, or a folder `polymodal data shard` wrote, with its `shards.json`)
    rather than a JSON Lines manifest."""
    if not isinstance(value, str):
        return False
    return re.search(r"\.(tar|tgz|tar\.gz)$", value) is not None or os.path.isfile(os.path.join(value, INDEX))


def shard_urls(pattern: str) -> list[str]:
    """The shards a pattern names, in order (braces expanded); local files must exist.

    Raises:
        DataError: the pattern names no shard, or local shards are missing (the first few named).
    """
    from webdataset.shardlists import expand_urls

    index = os.path.join(pattern, INDEX)
    if os.path.isfile(index):  # a folder `write_shards` wrote: the pattern its index gives
        try:
            pattern = os.path.join(pattern, json.loads(Path(index).read_text())["pattern"])
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise DataError(f"{index}: not an index of shards ({error!r}); expected the one `polymodal data "
                            "shard` writes") from None
    urls = expand_urls(pattern)
    if not urls:
        raise DataError(f"{pattern}: names no shard")
    local = [u for u in urls if "://" not in u and not u.startswith("pipe:")]
    missing = [u for u in local if not os.path.isfile(u)]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DataError(f"{pattern}: {len(missing)} of its {len(urls)} shards not found: {shown}")
    return urls


def write_shards(records: Sequence[dict[str, Any]], out: str | Path, shard_size: int = 1000,
                 log: Callable[[str], Any] = print) -> Path:
    """Write records (as `read_manifest` gives them: media fields are absolute paths) as tar shards.

    Each shard is written under a temporary name and renamed when complete, so a killed run leaves no
    half-written shard under a shard's name; `shards.json` (the sample count of each shard) comes last.

    Args:
        records: the manifest's records.
        out: the folder for `shard-000000.tar`, ... and `shards.json`.
        shard_size: samples per shard (the last one takes the rest).

    Returns:
        The `shards.json` written.
    """
    from webdataset import TarWriter

    if shard_size < 1:
        raise ValueError(f"--shard-size: expected at least 1 sample per shard, got {shard_size}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shards = []
    for first in range(0, len(records), shard_size):
        name = SHARD_NAME.format(len(shards))
        part = out / (name + ".part")
        chunk = records[first:first + shard_size]
        # a whole-second time: a fractional one costs every member an extra (PAX) header to write and read
        with TarWriter(str(part), encoder=False, mtime=int(time.time())) as writer:
            for number, record in enumerate(chunk, start=first):
                writer.write(_sample(record, f"{number:09d}"))
        os.replace(part, out / name)
        shards.append({"name": name, "samples": len(chunk)})
        log(f"{out / name}: {len(chunk)} samples")
    index = {"format": "webdataset", "samples": len(records), "shards": shards,
             "pattern": _pattern(len(shards))}
    path = out / INDEX
    _atomic_write(path, json.dumps(index, indent=1) + "\n")
    return path


def _pattern(count: int) -> str:
    """The brace pattern of `count` shards: shard-{000000..000009}.tar."""
    if count == 1:
        return SHARD_NAME.format(0)
    return "shard-{" + f"{0:06d}..{count - 1:06d}" + "}.tar"


def _sample(record: dict[str, Any], key: str) -> dict[str, Any]:
    sample: dict[str, Any] = {"__key__": key}
    fields = {}
    for name, value in record.items():
        if name == "_line":
            continue
        if name in MEDIA and isinstance(value, str):
            path = Path(value)
            sample[f"{name}{path.suffix.lower() or '.bin'}"] = path.read_bytes()  # readers go by content
        else:
            fields[name] = value
    sample["json"] = json.dumps(fields).encode("utf-8")
    return sample


def _atomic_write(path: Path, text: str) -> None:
    part = path.with_name(path.name + ".part")
    part.write_text(text)
    os.replace(part, path)


def record_of(sample: dict[str, Any], media: bool = True) -> dict[str, Any]:
    """A shard's sample (WebDataset's dict: `__key__`, `__url__`, one entry per member) as a record.

    Args:
        sample: the grouped members, by extension (`json`, `image.png`, `jpg`, `txt`, ...).
        media: keep the media bytes (as `MediaBytes`); without them a media field holds the member's
            name (enough to know the record has it: learning vocabularies, counting).

    Raises:
        DataError: a `.json` member that is not a JSON object, naming the shard and the key.
    """
    where = f"{sample.get('__url__', '?')}: sample {sample.get('__key__', '?')}"
    record: dict[str, Any] = {}
    if "json" in sample:
        try:
            value = json.loads(sample["json"])
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DataError(f"{where}: its .json member is not valid JSON ({error})") from None
        if not isinstance(value, dict):
            raise DataError(f"{where}: its .json member must be a JSON object, got {type(value).__name__}")
        record.update(value)
    for member, field in (("txt", "text"), ("cls", "label")):
        if member in sample and field not in record:
            try:
                record[field] = sample[member].decode("utf-8").strip()
            except UnicodeDecodeError as error:
                raise DataError(f"{where}: its .{member} member is not UTF-8 text ({error.reason})") from None
    for member, data in sample.items():
        if member.startswith("__") or not isinstance(data, bytes):
            continue
        field, _, extension = member.rpartition(".")
        named = field in MEDIA  # ours: `image.gif`, `video.webm`, `audio.bin`: any extension
        field = field or EXTENSION_FIELDS.get(extension, "")
        if field in MEDIA and (named or extension in EXTENSION_FIELDS):
            place = f"{sample['__key__']}.{member}"
            record[field] = MediaBytes(data, "." + extension, f"{sample['__url__']}#{place}") if media else place
    record.setdefault("id", sample["__key__"])
    record["id"] = str(record["id"])
    return record


def samples(urls: Sequence[str], select: Callable[[str], bool] | None = None) -> Iterator[dict[str, Any]]:
    """The samples of `urls` in order, as WebDataset groups them (`select`: which member names to read)."""
    from webdataset.tariterators import tarfile_samples

    return tarfile_samples([{"url": url} for url in urls], select_files=select)


def read_shard_records(pattern: str, media: bool = True) -> list[dict[str, Any]]:
    """Every record of the shards `pattern` names: validation and test splits read whole, and a training
    run's records without their media (`media=False`: only the text members are read, a media field
    holds its member's name), to learn its vocabularies and count what each task can use.

    Raises:
        DataError: missing or unreadable shards, a bad member, a duplicate id, or no record at all.
    """
    urls = shard_urls(pattern)
    records, seen = [], {}
    for url in urls:
        try:
            found = [record_of(s, media) for s in (samples([url]) if media else _text_samples(url))]
        except (tarfile.TarError, OSError, ValueError) as error:  # a truncated or corrupt shard
            raise DataError(f"{url}: cannot read this shard ({error})") from None
        for record in found:
            if record["id"] in seen:
                raise DataError(f"{url}: duplicate id {record['id']!r} (first in {seen[record['id']]})")
            seen[record["id"]] = url
            records.append(record)
    if not records:
        raise DataError(f"{pattern}: the shards hold no sample")
    return records


def _text_samples(url: str) -> Iterator[dict[str, Any]]:
    """A shard's samples with every member named but only the text members read (a local shard's media
    is skipped by seeking, not read)."""
    from webdataset.gopen import gopen
    from webdataset.tariterators import base_plus_ext

    local = "://" not in url and not url.startswith("pipe:")
    with (tarfile.open(url, "r:*") if local else tarfile.open(fileobj=gopen(url), mode="r|*")) as tar:
        current: dict[str, Any] | None = None
        for member in tar:
            if not member.isreg():
                continue
            key, extension = base_plus_ext(member.name)
            if key is None or key.startswith("__"):
                continue
            if current is None or current["__key__"] != key:
                if current is not None:
                    yield current
                current = {"__key__": key, "__url__": url}
            extension = extension.lower()
            read = extension.rpartition(".")[2] in ("json", "txt", "cls")
            current[extension] = tar.extractfile(member).read() if read else b""
        if current is not None:
            yield current


@contextmanager
def local_files(values: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """`values` with every `MediaBytes` written to a temporary file (in memory where /dev/shm exists) and
    replaced by its path, for readers that open paths (PIL, PyAV, Hugging Face processors); the files
    are removed on leaving. A file's name is a hash of the sample's place in its shard, so the same
    sample has the same path in every epoch (the decoded-media cache, keyed by path, serves it again)
    and two samples never share one."""
    written = []
    try:
        out = {}
        for name, value in values.items():
            if isinstance(value, MediaBytes):
                digest = hashlib.sha1((value.name or hashlib.sha1(value).hexdigest()).encode()).hexdigest()
                # this process's own name: loader workers are processes of their own
                path = os.path.join(_TEMP_DIR, f"polymodal-{_process_token()}-{digest[:24]}{value.suffix}")
                if path not in written:  # one file for a media value that feeds two inputs
                    written.append(path)  # before writing: a failed write is removed too
                    with open(path, "wb") as file:
                        file.write(value)
                value = path
            out[name] = value
        yield out
    finally:
        for path in written:
            if os.path.exists(path):
                os.unlink(path)


_tokens: dict[int, str] = {}


def _process_token() -> str:
    """A name for this process, unique on the machine (a pid alone may repeat in another container that
    shares /dev/shm) and the same for all its calls, so a sample keeps its path from epoch to epoch."""
    pid = os.getpid()
    if pid not in _tokens:
        _tokens[pid] = f"{pid}-{secrets.token_hex(4)}"
    return _tokens[pid]


_TEMP_DIR = "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
