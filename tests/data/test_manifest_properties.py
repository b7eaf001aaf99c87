"""Property: any records written as a manifest read back as themselves (hypothesis)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from polymodal.data.manifest import TEXT_FIELDS, read_manifest, write_manifest

json_scalars = st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.text(max_size=12) | st.floats(
    allow_nan=False, allow_infinity=False)
user_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)
known = st.fixed_dictionaries({}, optional={field: st.text(max_size=30) for field in TEXT_FIELDS})
extra = st.dictionaries(st.text(min_size=1, max_size=8).filter(lambda k: k not in (*TEXT_FIELDS, "id", "image",
                                                                                      "video", "audio", "_line")),
                        user_values, max_size=3)


@st.composite
def manifests(draw):
    ids = draw(st.lists(st.text(min_size=1, max_size=10), min_size=1, max_size=6, unique=True))
    records = []
    for record_id in ids:
        record = {"id": record_id, **draw(known), **draw(extra)}
        record.setdefault("text", draw(st.text(max_size=20)))  # a record needs some content
        records.append(record)
    return records


@settings(max_examples=60, deadline=None)
@given(manifests())
def test_records_round_trip_through_a_manifest(records):
    with tempfile.TemporaryDirectory() as tmp:
        path = write_manifest(Path(tmp) / "m.jsonl", records)
        back = read_manifest(path, check_media=False, log=lambda _: None)
    assert [r.pop("_line") for r in back] == list(range(1, len(records) + 1))
    assert back == records


@settings(max_examples=20, deadline=None)
@given(st.lists(st.text(alphabet="abcxyz_-", min_size=1, max_size=8), min_size=1, max_size=4, unique=True))
def test_relative_media_paths_read_back_under_the_manifest_folder(names):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        records = [{"id": n, "audio": f"media/{n}.wav"} for n in names]
        path = write_manifest(root / "sub" / ".." / "m.jsonl", records)
        back = read_manifest(path, check_media=False, log=lambda _: None)
        assert [r["audio"] for r in back] == [str(root.resolve() / "media" / f"{n}.wav") for n in names]
