"""Hostile and malformed requests (hypothesis): bad JSON, wrong types anywhere in a valid request, huge and
corrupt media, private-address URLs, path traversal under the media root. None gets a 5xx, and the server
answers a good request after them.

The default run sends 1 500; `POLYMODAL_FUZZ_EXAMPLES=10000 pytest tests/serving/test_fuzz.py` sends more
(docs/tutorials/serving.md quotes a 10 000-request run)."""

from __future__ import annotations

import base64
import copy
import json
import os
import socket
from unittest import mock

import httpx
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from polymodal.serving.media import MediaLimits
from serving.conftest import make_app, png_uri
from tests.serving.test_guards import huge_png

EXAMPLES = int(os.environ.get("POLYMODAL_FUZZ_EXAMPLES", "1500"))
SEEN: dict[int, int] = {}

HOSTILE_URLS = [
    "http://127.0.0.1/x.png", "http://localhost/x.png", "http://169.254.169.254/latest/meta-data", "http://[::1]/x",
    "http://10.0.0.1/x.png", "http://0.0.0.0/", "https://pics.example/redirect-to-private", "http://pics.example:99999/",
    "file:../../etc/passwd", "file:///etc/passwd", "file:%2e%2e%2f%2e%2e%2fetc/passwd", "file:ok.png/../../x",
    "file://evil/x", "file:\x00", "gopher://x", "javascript:alert(1)", "data:,", "data:image/png;base64,",
    "data:image/png;base64,%%%", "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\ncorrupt").decode(),
    "data:image/png;base64," + base64.b64encode(huge_png(60_000, 60_000)).decode(),
    "data:image/png;base64," + base64.b64encode(huge_png(0, 0)).decode(),
    "data:video/mp4;base64," + base64.b64encode(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64).decode(),
    "data:audio/wav;base64," + base64.b64encode(b"RIFF\xff\xff\xff\xffWAVEfmt " + b"\x01" * 40).decode(),
    "data:image/png;base64," + "QUFB" * 40_000, "x" * 5000, "",
]

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                      st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
                      st.sampled_from(HOSTILE_URLS))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                             st.dictionaries(st.text(max_size=12), inner, max_size=5)),
                          max_leaves=20)


def _part(url: str) -> list:
    return [{"type": "image_url", "image_url": {"url": url}}, {"type": "video_url", "video_url": {"url": url}},
            {"type": "audio_url", "audio_url": {"url": url}},
            {"type": "input_audio", "input_audio": {"data": url[-40:], "format": "wav"}},
            {"modality": "image", "data": url}]


GOOD = png_uri(size=(32, 32))
TEMPLATES = [
    ("/v1/chat/completions", {"model": "caption", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": GOOD}}, {"type": "text", "text": "hi"}]}], "max_tokens": 3}),
    ("/v1/chat/completions", {"model": "vqa", "stream": True, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": GOOD}}, {"type": "text", "text": "what color is it?"}]}]}),
    ("/v1/embeddings", {"model": "clip", "input": ["a red circle", {"type": "image_url", "image_url": {"url": GOOD}}]}),
    ("/v1/classify", {"model": "classes", "input": [{"type": "image_url", "image_url": {"url": GOOD}}], "top_k": 2}),
    ("/v1/rerank", {"model": "clip", "query": "a red circle", "documents": ["a", {"modality": "image", "data": GOOD}]}),
    ("/v1/images/generations", {"model": "draw", "prompt": "a red circle", "n": 1}),
    ("/v1/audio/generations", {"model": "sound", "prompt": "a high beep", "n": 1}),
    ("/v1/search", {"query": "a red circle", "top_k": 3}),
]
PATHS = sorted({p for p, _ in TEMPLATES}) + ["/v1/models", "/v1/nothing", "/v1/chat/completions/x", "/%2e%2e/etc"]


def _leaves(value, path=()):
    """Every (path, value) position in a JSON value, containers included."""
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(v, (*path, i))


@st.composite
def mutated(draw):
    """A valid request with up to three positions replaced by hostile values or media parts."""
    path, body = draw(st.sampled_from(TEMPLATES))
    body = copy.deepcopy(body)
    for _ in range(draw(st.integers(0, 3))):
        spots = [p for p, _ in _leaves(body) if p]
        if not spots:
            break
        spot = draw(st.sampled_from(spots))
        value = draw(st.one_of(json_value, st.sampled_from(HOSTILE_URLS).flatmap(lambda u: st.sampled_from(_part(u)))))
        holder = body
        for key in spot[:-1]:
            holder = holder[key]
        holder[spot[-1]] = value
    return path, body


@st.composite
def hostile_media(draw):
    """A valid request whose image is replaced by a hostile URL (private, traversal, huge, corrupt)."""
    path, body = draw(st.sampled_from([t for t in TEMPLATES if GOOD in str(t[1])]))
    url = draw(st.sampled_from(HOSTILE_URLS))

    def swap(value):
        if isinstance(value, dict):
            return {k: swap(v) for k, v in value.items()}
        if isinstance(value, list):
            return [swap(v) for v in value]
        return url if value == GOOD else value
    return path, swap(body)


requests = st.one_of(
    mutated(),
    hostile_media(),
    st.tuples(st.sampled_from(PATHS), json_value),
    st.tuples(st.sampled_from(PATHS), st.binary(max_size=300)),
    st.tuples(st.sampled_from(PATHS), st.just(b"[" * 5000 + b"]" * 5000)),
)


def _resolve(host, *args, **kwargs):
    addresses = {"pics.example": "93.184.216.34", "localhost": "127.0.0.1"}
    try:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (str(__import__("ipaddress").ip_address(host)), 0))]
    except ValueError:
        pass
    if host not in addresses:
        raise socket.gaierror("unknown host")
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (addresses[host], 0))]


def test_hostile_requests_never_get_a_5xx(served, tmp_path):
    Image.new("RGB", (16, 16)).save(tmp_path / "ok.png")

    def handler(request):
        if "redirect" in request.url.path:
            return httpx.Response(302, headers={"location": "http://10.1.2.3/x"})
        return httpx.Response(200, content=b"not an image")
    limits = MediaLimits(media_root=tmp_path, allow_domains=("pics.example", "localhost", "127.0.0.1"),
                         transport=httpx.MockTransport(handler), max_bytes=100_000, max_pixels=512 * 512)
    app = make_app(served, max_items=8, max_body_bytes=2_000_000, media=limits)
    with mock.patch.object(socket, "getaddrinfo", _resolve), TestClient(app, raise_server_exceptions=False) as client:

        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(requests)
        def send(request):
            path, body = request
            raw = body if isinstance(body, bytes) else json.dumps(body, allow_nan=True).encode()
            response = client.post(path, content=raw, headers={"content-type": "application/json"})
            SEEN[response.status_code] = SEEN.get(response.status_code, 0) + 1
            assert response.status_code < 500, (path, raw[:300], response.text[:300])
            if response.status_code >= 400:
                assert "message" in response.json()["error"]
        send()
        good = client.post("/v1/embeddings", json={"model": "clip", "input": "a red circle"})
    assert good.status_code == 200
    assert sum(SEEN.values()) >= EXAMPLES
    assert SEEN.get(200, 0) > 0 and sum(v for k, v in SEEN.items() if 400 <= k < 500) > EXAMPLES // 2
    print(f"fuzz: {sum(SEEN.values())} requests, statuses {dict(sorted(SEEN.items()))}")
