"""Manifests: JSON Lines files with one example per line.

A record is a JSON object. Known fields:

- `id` (string, required, unique within the file)
- `image`, `video`, `audio`: paths to media files, relative to the manifest's folder (absolute paths
  also work)
- `text`, `question`, `answer`, `label`, `question_type`: strings

Unknown fields are kept as they are, so users can carry their own metadata through. Blank lines are
ignored; a known field set to `null` counts as absent. `check_manifest` reports every problem in a file
at once, so a user fixes a manifest in one pass instead of one error per run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from polymodal.data.media import probe
from .shards import is_shard_pattern, read_shard_records
from ..errors import DataError

MEDIA_FIELDS = ("image", "video", "audio")
TEXT_FIELDS = ("text", "question", "answer", "label", "question_type")
# A record must carry at least one of these, or no modality could read it.
CONTENT_FIELDS = ("image", "video", "audio", "text")
ON_ERROR_CHOICES = ("fail", "skip")
MAX_REPORTED = 50


@dataclass
class Problem:
    """One thing wrong with a manifest.

    Attributes:
        line: 1-based line number in the manifest (0 for a problem with the whole file).
        field: the record field at fault, or None when the problem is the whole line.
        message: what is wrong and what was expected.
        path: the manifest, as the caller named it; used as the prefix of `str(problem)`.
    """

    line: int
    field: str | None
    message: str
    path: str = ""

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        what = f"{self.field}: {self.message}" if self.field else self.message
        return f"{where}: {what}" if where else what


def check_manifest(
    path: str | Path, *, required: Sequence[str] = (), check_media: bool = True
) -> tuple[list[dict], list[Problem]]:
    """Parse a manifest and find every problem in it.

    Args:
        path: the JSON Lines manifest.
        required: fields every record must have (e.g. `("image", "question", "answer")` for VQA).
        check_media: also open every image and check every video / audio file exists and is not empty.

    Returns:
        (records, problems): the records without problems, each with `_line` (its line number) added and
        its media paths replaced by absolute path strings; and every problem found, in line order.

    Raises:
        DataError: the manifest itself is missing or unreadable.
    """
    path = Path(path)
    name = str(path)
    root = path.resolve().parent
    try:
        raw_lines = path.read_bytes().split(b"\n")
    except FileNotFoundError:
        raise DataError(f"manifest not found: {name}") from None
    except IsADirectoryError:
        raise DataError(f"manifest is a folder, expected a .jsonl file: {name}") from None
    except OSError as error:
        raise DataError(f"cannot read manifest {name}: {error.strerror or error}") from None

    records: list[dict] = []
    problems: list[Problem] = []
    first_line_of_id: dict[str, int] = {}
    n_records = 0
    for number, raw in enumerate(raw_lines, start=1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark
            raw = raw[3:]
        if not raw.strip():
            continue
        n_records += 1
        found: list[Problem] = []
        record = _parse_line(raw, number, name, found)
        if record is not None:
            _check_fields(record, number, name, required, first_line_of_id, found)
            _resolve_media(record, root, name, number, check_media, found)
        if found:
            problems.extend(found)
        elif record is not None:
            record["_line"] = number
            records.append(record)
    if n_records == 0:
        problems.append(Problem(0, None, "manifest has no records", name))
    return records, problems


def read_manifest(
    path: str | Path,
    *,
    required: Sequence[str] = (),
    on_error: str = "fail",
    check_media: bool = True,
    log: Callable[[str], Any] = print,
) -> list[dict]:
    """Read a manifest for training or evaluation.

    Args:
        path: the JSON Lines manifest.
        required: fields every record must have.
        on_error: "fail" raises on any problem; "skip" drops bad records and logs how many.
        check_media: also check every media file (see `check_manifest`).
        log: where the one-line "skipped" notice goes.

    Returns:
        The good records (see `check_manifest`).

    Raises:
        ValueError: `on_error` is not one of "fail", "skip".
        DataError: the manifest is missing, has problems (on_error "fail") or has no usable record.
    """
    if on_error not in ON_ERROR_CHOICES:
        allowed = ", ".join(repr(choice) for choice in ON_ERROR_CHOICES)
        raise ValueError(f"on_error: expected one of {allowed}, got {on_error!r}")
    records, problems = check_manifest(path, required=required, check_media=check_media)
    if not problems:
        return records
    if on_error == "fail" or not records:
        hint = "set data.on_error: skip to skip bad records" if records else "no usable records left"
        raise DataError(f"{format_report(path, problems)}\n{hint}")
    bad_lines = {problem.line for problem in problems}
    total = len(records) + len(bad_lines)
    log(f"skipped {len(bad_lines)} of {total} records in {path} (first problem: {problems[0]})")
    return records


def read_records(path: str | Path, *, media: bool = True, on_error: str = "fail",
                 log: Callable[[str], Any] = print) -> list[dict]:
    """A split's records: a JSON Lines manifest (`read_manifest`), or WebDataset tar shards where `path`
    is a shard pattern (`DIR/shard-{000000..000009}.tar`), read whole (`media=False`: their text only,
    for a training split that streams its media)."""
    if is_shard_pattern(str(path)):
        return read_shard_records(str(path), media)
    return read_manifest(path, on_error=on_error, log=log)


def subset(records: list[dict], fraction: float) -> list[dict]:
    """The records whose hash falls in the first `fraction` of its range: a fixed subset, the same on
    every machine and for every seed, and nested (the 10% subset lies inside the 20% one). A record's hash
    is that of its `id` where it has one, else of its whole content."""
    if fraction >= 1:
        return records
    return [r for r in records if in_subset(r, fraction)]


def in_subset(record: dict, fraction: float) -> bool:
    """Whether `record` is in `subset`'s share `fraction` (one record at a time: for streamed shards)."""
    if fraction >= 1:
        return True
    key = str(record["id"]) if "id" in record else json.dumps(record, sort_keys=True, default=str)
    return int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:12], 16) / 16**12 < fraction


def write_manifest(path: str | Path, records: Sequence[dict]) -> Path:
    """Write records as a manifest, one JSON object per line (the `_line` that reading adds is left out).

    Media paths are written as given: relative ones are read back relative to the manifest's folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        file.writelines(json.dumps({k: v for k, v in r.items() if k != "_line"}) + "\n" for r in records)
    return path


def format_report(path: str | Path, problems: Sequence[Problem]) -> str:
    """A human-readable listing of a manifest's problems (at most 50 lines of them).

    Args:
        path: the manifest the problems were found in.
        problems: as returned by `check_manifest`.

    Returns:
        "PATH: no problems found" or a header line followed by one indented line per problem.
    """
    if not problems:
        return f"{path}: no problems found"
    lines = {problem.line for problem in problems if problem.line}
    noun = "problem" if len(problems) == 1 else "problems"
    where = f" on {len(lines)} line{'s' if len(lines) != 1 else ''}" if lines else ""
    report = [f"{path}: {len(problems)} {noun}{where}:"]
    for problem in problems[:MAX_REPORTED]:
        report.append(f"  {dataclasses.replace(problem, path=problem.path or str(path))}")
    if len(problems) > MAX_REPORTED:
        report.append(f"  ... and {len(problems) - MAX_REPORTED} more")
    return "\n".join(report)


def _parse_line(raw: bytes, number: int, name: str, found: list[Problem]) -> dict | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        found.append(Problem(number, None, f"not valid UTF-8 ({error.reason} at byte {error.start})", name))
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        found.append(Problem(number, None, f"invalid JSON: {error.msg} (column {error.colno})", name))
        return None
    if not isinstance(value, dict):
        found.append(Problem(number, None, f"expected a JSON object, got {_type_name(value)}", name))
        return None
    return value


def _check_fields(
    record: dict,
    number: int,
    name: str,
    required: Sequence[str],
    first_line_of_id: dict[str, int],
    found: list[Problem],
) -> None:
    for field in (*MEDIA_FIELDS, *TEXT_FIELDS):
        if field in record and record[field] is None:
            del record[field]  # null means "not given"
    for field in ("id", *MEDIA_FIELDS, *TEXT_FIELDS):
        value = record.get(field)
        if field in record and not isinstance(value, str):
            found.append(Problem(number, field, f"expected a string, got {_type_name(value)}", name))
        elif field in MEDIA_FIELDS and value == "":
            found.append(Problem(number, field, "expected a file path, got an empty string", name))
        elif field == "id" and value == "":
            found.append(Problem(number, field, "expected a non-empty string", name))

    record_id = record.get("id")
    if record_id is None:
        found.append(Problem(number, "id", "missing (every record needs a unique string id)", name))
    elif isinstance(record_id, str) and record_id:
        if record_id in first_line_of_id:
            first = first_line_of_id[record_id]
            message = f"duplicate id {record_id!r} (first used on line {first})"
            found.append(Problem(number, "id", message, name))
        else:
            first_line_of_id[record_id] = number

    for field in required:
        if field not in record:
            found.append(Problem(number, field, "missing required field", name))
    if not any(field in record for field in CONTENT_FIELDS):
        fields = ", ".join(CONTENT_FIELDS)
        found.append(Problem(number, None, f"record has none of the fields {fields}", name))


def _resolve_media(
    record: dict, root: Path, name: str, number: int, check_media: bool, found: list[Problem]
) -> None:
    for field in MEDIA_FIELDS:
        given = record.get(field)
        if not isinstance(given, str) or not given:
            continue  # absent, or already reported by _check_fields
        media = root / given
        if check_media:
            message = _check_media_file(media, field)
            if message is not None:
                found.append(Problem(number, field, message.format(path=given), name))
                continue
        record[field] = str(media)


def _check_media_file(media: Path, field: str) -> str | None:
    """None if the file looks usable, else what is wrong with it ({path} marks the file's name)."""
    if not media.exists():
        return "file not found: {path}"
    if not media.is_file():
        return "not a file: {path}"
    if not os.access(media, os.R_OK):
        return "file not readable (permission denied): {path}"
    if media.stat().st_size == 0:
        return "empty file: {path}"
    if field in ("video", "audio"):
        try:
            probe(media, field)
        except DataError as error:
            reason = str(error).replace(str(media), "").lstrip(": ").replace("{", "{{").replace("}", "}}")
            return f"cannot read {field} {{path}}: " + reason
        return None
    try:
        with Image.open(media) as image:
            image.verify()  # checks structure and checksums without decoding
        with Image.open(media) as image:
            image.load()  # verify() misses truncated pixel data
    except Exception as error:  # Pillow raises many types for bad files
        reason = str(error).replace("{", "{{").replace("}", "}}")
        return "cannot read image {path}: " + reason
    return None


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    names = {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }
    return names.get(type(value), type(value).__name__)
