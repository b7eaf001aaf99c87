"""/v1/audio/transcriptions (OpenAI's speech-to-text route) over the speech recipe: the official client gets
what `model.transcribe` gives, as JSON or text, for files of any format; wrong uploads are 4xx naming the field."""

from __future__ import annotations

import io
import json
import wave

import numpy as np
import openai
import pytest
from fastapi.testclient import TestClient

from polymodal.api import load
from polymodal.data.media import read_audio, write_audio
from polymodal.serving import ServedModel, ServeSettings, create_app
from polymodal.serving.media import MediaLimits
from serving.conftest import train_shipped


@pytest.fixture(scope="module")
def speech(tmp_path_factory, speech_data) -> ServedModel:
    run = train_shipped("transcribe-speech.yaml", speech_data, tmp_path_factory.mktemp("speech-run") / "run", steps=3)
    return ServedModel("speech", load(run, device="cpu"))


@pytest.fixture(scope="module")
def client(speech):
    with TestClient(create_app([speech], ServeSettings())) as c:
        yield c


def _files(speech_data, split: str = "test", count: int = 3) -> list[str]:
    records = [json.loads(line) for line in (speech_data / f"{split}.jsonl").read_text().splitlines()]
    return [str(speech_data / r["audio"]) for r in records[:count]]


def test_the_official_client_gets_the_python_api_transcripts(client, speech, speech_data, tmp_path):
    ai = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=client, max_retries=0)
    paths = _files(speech_data)
    expected = speech.model.transcribe(paths)
    for path, text in zip(paths, expected):
        with open(path, "rb") as file:
            got = ai.audio.transcriptions.create(model="speech", file=file)
        assert got.text == text
    with open(paths[0], "rb") as file:
        plain = ai.audio.transcriptions.create(model="speech", file=file, response_format="text")
    assert plain == expected[0]
    # the same sound as FLAC: decoded and resampled like any file the model reads
    flac = tmp_path / "same.flac"
    write_audio(flac, read_audio(paths[0], sample_rate=16000)[0], 16000)
    with open(flac, "rb") as file:
        assert ai.audio.transcriptions.create(model="speech", file=file).text == speech.model.transcribe(str(flac))
    assert "transcriptions" in client.get("/v1/models/speech").json()["capabilities"]


def test_requests_arriving_together_are_transcribed_as_each_alone(client, speech, speech_data):
    from concurrent.futures import ThreadPoolExecutor

    paths = _files(speech_data, "words", 4)
    expected = [speech.model.transcribe(p) for p in paths]

    def post(path: str) -> str:
        with open(path, "rb") as file:
            response = client.post("/v1/audio/transcriptions", files={"file": ("a.wav", file, "audio/wav")},
                                   data={"model": "speech"})
        assert response.status_code == 200, response.text
        return response.json()["text"]

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(post, paths)) == expected


def _wav(seconds: float) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes((np.sin(np.arange(int(16000 * seconds)) / 5) * 8000).astype("<i2").tobytes())
    return buffer.getvalue()


def test_bad_uploads_are_refused_naming_the_field(client, speech, tmp_path):
    def post(**kwargs):
        return client.post("/v1/audio/transcriptions", **kwargs)

    cases = [
        (post(json={"model": "speech"}), 400, "body", "multipart/form-data"),
        (post(data={"model": "speech"}, files={"other": ("a.wav", _wav(0.5))}), 400, "file", "required"),
        (post(data={"model": "speech"}, files={"file": ("a.wav", b"not a sound at all")}), 400, "file",
         "not a readable sound"),
        (post(data={"model": "speech"}, files={"file": ("a.wav", b"")}), 400, "file", "empty"),
        (post(data={"model": "nope"}, files={"file": ("a.wav", _wav(0.5))}), 404, "model", "not served"),
        (post(data={"model": "speech", "task": "caption"}, files={"file": ("a.wav", _wav(0.5))}), 400, "task",
         "transcribes with ctc, transcribe"),
        (post(data={"model": "speech", "response_format": "srt"}, files={"file": ("a.wav", _wav(0.5))}), 400,
         "response_format", "json"),
    ]
    for response, status, param, words in cases:
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["param"] == param and words in error["message"], error
    # a named task: the attention decoder alone, as the Python API runs it
    (tmp_path / "tone.wav").write_bytes(_wav(0.5))
    ok = post(data={"model": "speech", "task": "transcribe"}, files={"file": ("a.wav", _wav(0.5))})
    assert ok.status_code == 200 and ok.json()["text"] == speech.model.transcribe(str(tmp_path / "tone.wav"),
                                                                                 task="transcribe")


def test_long_and_large_uploads_are_413(speech):
    limits = MediaLimits(max_audio_seconds=1.0, max_bytes=200_000)
    with TestClient(create_app([speech], ServeSettings(media=limits))) as small:
        long = small.post("/v1/audio/transcriptions", files={"file": ("a.wav", _wav(2.0))})
        assert long.status_code == 413 and "seconds of sound" in long.json()["error"]["message"]
        large = small.post("/v1/audio/transcriptions", files={"file": ("a.wav", b"\0" * 300_000)})
        assert large.status_code == 413 and large.json()["error"]["param"] == "file"
