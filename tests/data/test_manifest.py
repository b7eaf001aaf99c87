"""Manifest parsing: every problem reported with its line, fail / skip behaviour, path resolution."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from polymodal.data.media import write_audio, write_video

from polymodal.data.manifest import Problem, check_manifest, format_report, read_manifest
from polymodal.errors import DataError


def _write_png(path: Path, color=(200, 30, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path)


@pytest.fixture()
def bad_manifest(tmp_path: Path) -> Path:
    """A manifest with one problem of each kind; only lines 1 and 11 are good (line 6 is blank)."""
    _write_png(tmp_path / "images" / "ok.png")
    (tmp_path / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "empty.mp4").write_bytes(b"")
    lines = [
        json.dumps({"id": "a", "image": "images/ok.png", "text": "a red square", "answer": "red"}),  # 1 good
        json.dumps({"id": "b", "image": "images/ok.png", "text": "x"}),  # 2 missing required answer
        '{"id": "c", "text": "unterminated"',  # 3 bad JSON
        "[1, 2, 3]",  # 4 not an object
        json.dumps({"text": "no id here", "answer": "x"}),  # 5 missing id
        "",  # 6 blank: ignored
        json.dumps({"id": "a", "text": "again", "answer": "x"}),  # 7 duplicate of line 1
        json.dumps({"id": "e", "text": 5, "answer": "x"}),  # 8 wrong type
        json.dumps({"id": "f", "image": "images/missing.png", "answer": "x"}),  # 9 missing file
        json.dumps({"id": "g", "image": "images/corrupt.png", "answer": "x"}),  # 10 corrupt PNG
        json.dumps({"id": "h", "text": "fine", "answer": "y", "extra": {"kept": True}}),  # 11 good
        json.dumps({"id": "i", "answer": "x"}),  # 12 no content field
        json.dumps({"id": "j", "video": "clips/empty.mp4", "answer": "x"}),  # 13 empty video
        json.dumps({"id": "", "image": "images/gone.png", "label": ["x"], "answer": "x"}),  # 14: three
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


EXPECTED = [  # (line, field, words in the message)
    (2, "answer", "missing required field"),
    (3, None, "invalid JSON"),
    (4, None, "expected a JSON object, got a list"),
    (5, "id", "missing"),
    (7, "id", "duplicate id 'a' (first used on line 1)"),
    (8, "text", "expected a string, got a number"),
    (9, "image", "file not found: images/missing.png"),
    (10, "image", "cannot read image images/corrupt.png"),
    (12, None, "none of the fields"),
    (13, "video", "empty file: clips/empty.mp4"),
    (14, "id", "expected a non-empty string"),
    (14, "label", "expected a string, got a list"),
    (14, "image", "file not found: images/gone.png"),
]


def test_check_reports_every_problem_with_its_line(bad_manifest: Path) -> None:
    records, problems = check_manifest(bad_manifest, required=["answer"])
    found = [(p.line, p.field) for p in problems]
    assert found == [(line, field) for line, field, _ in EXPECTED]
    for problem, (_, _, words) in zip(problems, EXPECTED):
        assert words in problem.message
    assert [r["id"] for r in records] == ["a", "h"]
    assert [r["_line"] for r in records] == [1, 11]
    assert records[1]["extra"] == {"kept": True}  # unknown fields are kept


def test_problem_str_names_file_line_and_field(bad_manifest: Path) -> None:
    _, problems = check_manifest(bad_manifest, required=["answer"])
    assert str(problems[6]) == f"{bad_manifest}:9: image: file not found: images/missing.png"
    assert str(Problem(12, "image", "file not found: images/x.png", "train.jsonl")) == (
        "train.jsonl:12: image: file not found: images/x.png"
    )
    assert str(Problem(3, None, "invalid JSON: oops", "m.jsonl")) == "m.jsonl:3: invalid JSON: oops"


def test_bad_json_names_the_json_error(bad_manifest: Path) -> None:
    _, problems = check_manifest(bad_manifest)
    bad_json = next(p for p in problems if p.line == 3)
    assert "Expecting" in bad_json.message and "column" in bad_json.message


def test_read_manifest_fail_lists_every_problem(bad_manifest: Path) -> None:
    with pytest.raises(DataError) as error:
        read_manifest(bad_manifest, required=["answer"])
    message = str(error.value)
    for line, _, words in EXPECTED:
        assert f"{bad_manifest}:{line}:" in message
        assert words in message
    assert "set data.on_error: skip to skip bad records" in message


def test_read_manifest_skip_returns_good_records_and_logs(bad_manifest: Path) -> None:
    logged: list[str] = []
    records = read_manifest(bad_manifest, required=["answer"], on_error="skip", log=logged.append)
    assert [r["id"] for r in records] == ["a", "h"]
    assert len(logged) == 1
    assert logged[0].startswith(f"skipped 11 of 13 records in {bad_manifest} (first problem: ")
    assert ":2: answer: missing required field" in logged[0]


def test_read_manifest_rejects_unknown_on_error(bad_manifest: Path) -> None:
    with pytest.raises(ValueError, match="'fail', 'skip'"):
        read_manifest(bad_manifest, on_error="ignore")


def test_media_paths_resolve_relative_to_manifest_folder(tmp_path: Path, monkeypatch) -> None:
    data = tmp_path / "data"
    _write_png(data / "img" / "one.png")
    write_audio(data / "sound.wav", np.zeros(400, np.float32), 8000)
    manifest = data / "m.jsonl"
    manifest.write_text(
        json.dumps({"id": "1", "image": "img/one.png", "audio": "sound.wav", "label": "x"}) + "\n\n\n"
    )
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    records = read_manifest(Path("data") / "m.jsonl")
    assert records == [
        {
            "id": "1",
            "image": str((data / "img" / "one.png").resolve()),
            "audio": str((data / "sound.wav").resolve()),
            "label": "x",
            "_line": 1,
        }
    ]


def test_check_media_false_skips_file_checks(tmp_path: Path) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "1", "image": "nowhere.png"}) + "\n")
    records, problems = check_manifest(manifest, check_media=False)
    assert problems == []
    assert records[0]["image"] == str((tmp_path / "nowhere.png").resolve())


def test_missing_manifest_raises_naming_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="manifest not found: .*nope.jsonl"):
        check_manifest(tmp_path / "nope.jsonl")


def test_empty_manifest_is_a_problem(tmp_path: Path) -> None:
    manifest = tmp_path / "empty.jsonl"
    manifest.write_text("\n  \n")
    records, problems = check_manifest(manifest)
    assert records == [] and len(problems) == 1 and "no records" in str(problems[0])


def test_report_caps_the_listing(tmp_path: Path) -> None:
    problems = [Problem(i, "id", "missing") for i in range(1, 61)]
    report = format_report(tmp_path / "m.jsonl", problems).splitlines()
    assert report[0] == f"{tmp_path / 'm.jsonl'}: 60 problems on 60 lines:"
    assert len(report) == 1 + 50 + 1
    assert report[1] == f"  {tmp_path / 'm.jsonl'}:1: id: missing"
    assert report[-1] == "  ... and 10 more"


def test_video_and_audio_files_are_opened_and_checked(tmp_path: Path) -> None:
    clip = np.zeros((4, 16, 16, 3), np.uint8)
    write_video(tmp_path / "ok.mp4", clip, fps=4)
    write_video(tmp_path / "silent.gif", clip, fps=4)
    write_audio(tmp_path / "ok.wav", np.zeros(800, np.float32), 8000)
    (tmp_path / "text.mp4").write_text("not a video at all\n" * 10)
    lines = [
        {"id": "1", "video": "ok.mp4", "audio": "ok.wav"},  # good
        {"id": "2", "video": "text.mp4"},  # not media
        {"id": "3", "audio": "silent.gif"},  # a GIF has no sound
        {"id": "4", "video": "ok.wav"},  # a WAV has no pictures
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    records, problems = check_manifest(manifest)
    assert [r["id"] for r in records] == ["1"]
    found = {(p.line, p.field): p.message for p in problems}
    assert set(found) == {(2, "video"), (3, "audio"), (4, "video")}
    assert "cannot read video text.mp4: not a readable media file" in found[2, "video"]
    assert "cannot read audio silent.gif: has no audio stream" in found[3, "audio"]
    assert "cannot read video ok.wav: has no video stream" in found[4, "video"]
