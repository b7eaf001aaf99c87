"""Nothing bad gets in: every refusal is a 4xx in OpenAI's error shape naming the field; media come only from
data URIs, the media root and allowed public hosts; limits hold (413), the concurrency cap answers 429 with
Retry-After, the bearer key is checked."""

from __future__ import annotations

import asyncio
import base64
import io
import struct
import zlib

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from polymodal.serving.media import MediaLimits
from serving.conftest import first_record, make_app, png_uri, running


@pytest.fixture(scope="module")
def client(served, tmp_path_factory):
    root = tmp_path_factory.mktemp("media-root")
    Image.new("RGB", (32, 32), (0, 200, 0)).save(root / "green.png")
    (root.parent / "secret.png").write_bytes((root / "green.png").read_bytes())
    app = make_app(served, media=MediaLimits(media_root=root, max_pixels=256 * 256, max_bytes=200_000), max_items=8)
    with TestClient(app) as c:
        c.media_root = root
        yield c


def _image_chat(client, url, model="caption"):
    return client.post("/v1/chat/completions", json={"model": model, "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]})


def _refused(response, status, param=None, words=""):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if param is not None:
        assert error["param"] == param
    assert words.lower() in error["message"].lower()
    return error


def huge_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width × height pixels, with one row of data (a decompression bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("body, status, param, words", [
    (b"{not json", 400, "body", "malformed JSON at line 1"),
    (b"\xff\xfe", 400, "body", "not UTF-8"),
    (b'"a string"', 400, "body", "expected a JSON object"),
    (b'{"model": "caption"}', 400, "messages", "required"),
    (b'{"model": "caption", "messages": "hi"}', 400, "messages", "expected a list"),
    (b'{"model": "caption", "messages": [{"role": "wizard", "content": "hi"}]}', 400, "messages[0].role", "expected one of"),
    (b'{"model": "caption", "messages": [{"role": "user", "content": [{"type": "sticker"}]}]}', 400,
     "messages[0].content[0].type", "expected one of"),
    (b'{"model": "caption", "messages": [{"role": "user", "content": 7}]}', 400, "messages[0].content", "string or a list"),
    (b'{"model": "caption", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}', 400,
     "temperature", "finite number"),
    (b'{"model": "caption", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}', 400, "max_tokens", "at least 1"),
    (b'{"model": "caption", "messages": [{"role": "user", "content": "hi"}], "n": 99}', 400, "n", "from 1 to"),
    (b'{"model": "ghost", "messages": [{"role": "user", "content": "hi"}]}', 404, "model", "not served"),
    (b'{"model": "clip", "messages": [{"role": "user", "content": "hi"}]}', 400, "model", "no chat task"),
    (b'{"model": "caption", "messages": [{"role": "user", "content": "hi"}]}', 400, "messages", "needs an image"),
    (b'{"model": "clip", "input": [[1, 2, 3]]}', 400, "input", "token arrays"),
    (b'{"model": "clip", "input": ["a", "b", "c", "d", "e", "f", "g", "h", "i"]}', 413, "input", "at most 8"),
    (b'{"model": "clip", "input": "x", "dimensions": 3}', 400, "dimensions", "dimensions only"),
    (b'{"model": "clip", "input": "x", "encoding_format": "hex"}', 400, "encoding_format", "expected one of"),
    (b'{"model": "draw", "prompt": "a red circle", "size": "1024x1024"}', 400, "size", "draws"),
    (b'{"model": "draw", "prompt": "a red circle", "response_format": "url"}', 400, "response_format", "expected one of"),
    (b'{"model": "caption", "prompt": "a red circle"}', 400, "model", "no text_to_image"),
    (b'{"model": "classes", "input": [{"type": "text", "text": "hi"}]}', 400, "input[0]", "reads image"),
    (b'{"query": "x"}', 400, "index", "no index"),
])
def test_bad_requests_get_a_4xx_naming_the_field(client, body, status, param, words):
    path = ("/v1/embeddings" if b'"input"' in body and b"classes" not in body else
            "/v1/classify" if b"classes" in body else "/v1/images/generations" if b'"prompt"' in body else
            "/v1/search" if b'"query"' in body else "/v1/chat/completions")
    _refused(client.post(path, content=body, headers={"content-type": "application/json"}), status, param, words)


def test_unknown_routes_and_methods_are_openai_shaped(client):
    _refused(client.get("/v1/nothing"), 404)
    _refused(client.get("/v1/chat/completions"), 405)


def test_media_are_checked_before_a_model_sees_them(client):
    where = "messages[0].content[0].image_url.url"
    _refused(_image_chat(client, "data:image/png;base64,%%%"), 400, where, "not valid base64")
    _refused(_image_chat(client, "data:image/png;base64," + base64.b64encode(b"not an image").decode()), 400, where,
             "not a readable image")
    _refused(_image_chat(client, "data:image/png;base64," + base64.b64encode(huge_png(100_000, 100_000)).decode()),
             413, where, "pixels")
    _refused(_image_chat(client, png_uri(size=(300, 300))), 413, where, "pixels")
    _refused(_image_chat(client, "data:image/png;base64," + "A" * 400_000), 413, where, "bytes")
    _refused(_image_chat(client, "ftp://example.com/a.png"), 400, where, "scheme 'ftp'")
    _refused(client.post("/v1/chat/completions", json={"model": "caption", "messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}]}), 400, None, "")


def test_file_urls_stay_inside_the_media_root(client):
    root = client.media_root
    assert _image_chat(client, "file:green.png").status_code == 200
    assert _image_chat(client, f"file://{root}/green.png").status_code == 200
    where = "messages[0].content[0].image_url.url"
    for url in ("file:../secret.png", f"file://{root}/../secret.png", "file:///etc/passwd", "file:%2e%2e/secret.png"):
        _refused(_image_chat(client, url), 400, where, "outside the media root")
    (root / "link.png").unlink(missing_ok=True)
    (root / "link.png").symlink_to(root.parent / "secret.png")
    _refused(_image_chat(client, "file:link.png"), 400, where, "outside the media root")
    _refused(_image_chat(client, "file://otherhost/green.png"), 400, where, "names no host")


def test_file_urls_are_off_without_a_media_root(served):
    with TestClient(make_app(served, ("caption",))) as client:
        _refused(_image_chat(client, "file:green.png"), 400, None, "--media-root")


def _fetching_client(served, monkeypatch, handler, addresses):
    """A client whose server fetches URLs through `handler` (a mock transport) and resolves host names to
    `addresses` (host → IP)."""
    import socket

    def resolve(host, *args, **kwargs):
        if host not in addresses:
            raise socket.gaierror("unknown host")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (addresses[host], 0))]
    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    limits = MediaLimits(allow_domains=("pics.example", "inside.example"), transport=httpx.MockTransport(handler),
                         max_bytes=100_000)
    return TestClient(make_app(served, ("caption",), media=limits))


def test_urls_only_from_allowed_public_hosts_with_every_redirect_checked(served, monkeypatch, shapes_data):
    image = open(first_record(shapes_data)["image"], "rb").read()

    def handler(request):
        if request.url.path == "/ok.png":
            return httpx.Response(200, content=image)
        if request.url.path == "/to-private":
            return httpx.Response(302, headers={"location": "http://inside.example/secret.png"})
        if request.url.path == "/to-loopback":
            return httpx.Response(302, headers={"location": "http://127.0.0.1/secret.png"})
        if request.url.path == "/big.png":
            return httpx.Response(200, content=b"x" * 200_000)
        return httpx.Response(404)
    with _fetching_client(served, monkeypatch, handler, {"pics.example": "93.184.216.34", "inside.example": "10.0.0.7",
                                                         "other.example": "93.184.216.35"}) as client:
        where = "messages[0].content[0].image_url.url"
        assert _image_chat(client, "https://pics.example/ok.png").status_code == 200
        _refused(_image_chat(client, "https://other.example/ok.png"), 400, where, "not an allowed media domain")
        _refused(_image_chat(client, "https://inside.example/ok.png"), 400, where, "public addresses only")
        _refused(_image_chat(client, "https://pics.example/to-private"), 400, where, "public addresses only")
        _refused(_image_chat(client, "https://pics.example/to-loopback"), 400, where, "not an allowed media domain")
        _refused(_image_chat(client, "https://pics.example/missing.png"), 400, where, "HTTP 404")
        _refused(_image_chat(client, "https://pics.example/big.png"), 413, where, "bytes")


def test_the_bearer_key_is_checked(served):
    with TestClient(make_app(served, ("clip",), api_key="s3cret")) as client:
        _refused(client.post("/v1/embeddings", json={"input": "x"}), 401, None, "API key")
        _refused(client.post("/v1/embeddings", json={"input": "x"}, headers={"Authorization": "Bearer wrong"}), 401)
        assert client.post("/v1/embeddings", json={"input": "x"},
                           headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert client.get("/health").status_code == 200  # health stays open for load balancers


def test_body_size_is_capped_declared_or_streamed(served):
    with TestClient(make_app(served, ("clip",), max_body_bytes=1000)) as client:
        _refused(client.post("/v1/embeddings", content=b"{" + b" " * 2000 + b"}",
                             headers={"content-type": "application/json"}), 413, "body")

        def chunks():
            for _ in range(20):
                yield b" " * 100
        _refused(client.post("/v1/embeddings", content=chunks(), headers={"content-type": "application/json"}), 413,
                 "body")


def test_past_the_concurrency_limit_a_429_with_retry_after(served):
    import threading

    gate = threading.Event()
    model = served["clip"]
    original = model.run_embed

    def slow(modality, values):
        gate.wait(30)
        return original(modality, values)
    model.run_embed = slow
    try:
        with running(make_app(served, ("clip",), max_concurrency=2, max_batch_size=1)) as url:
            async def go():
                async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                    held = [asyncio.ensure_future(client.post("/v1/embeddings", json={"input": "x"})) for _ in range(2)]
                    await asyncio.sleep(0.5)
                    refused = await client.post("/v1/embeddings", json={"input": "y"})
                    gate.set()
                    return refused, await asyncio.gather(*held)
            refused, held = asyncio.run(go())
    finally:
        model.run_embed = original
        gate.set()
    _refused(refused, 429, None, "limit")
    assert refused.headers["retry-after"] == "1"
    assert [r.status_code for r in held] == [200, 200]


def test_a_crashing_model_call_is_a_500_and_the_server_goes_on(served):
    model = served["clip"]
    original = model.run_embed
    model.run_embed = lambda modality, values: 1 / 0
    try:
        with TestClient(make_app(served, ("clip",)), raise_server_exceptions=False) as client:
            crashed = client.post("/v1/embeddings", json={"input": "x"})
            model.run_embed = original
            fine = client.post("/v1/embeddings", json={"input": "x"})
    finally:
        model.run_embed = original
    error = _refused(crashed, 500, None, "ZeroDivisionError")
    assert error["code"] == "internal_error"
    assert fine.status_code == 200
