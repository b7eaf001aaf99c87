"""The `polymodal serve` application: an OpenAI-compatible API over trained models, with dynamic batching,
limits, an optional bearer key, Prometheus metrics and the playground page.

Every request is read field by field (`fields.py`); anything wrong is a 4xx in OpenAI's error shape that
names the field. Model calls go through one `Batcher`, so concurrent requests share forward passes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import PolymodalError
from .batching import Batcher
from .engine import ChatItem, ServedModel
from .errors import APIError
from .fields import Fields, parse_json
from .media import Media, MediaLimits
from .parts import Scratch, materialise, read_part
from .search import SearchIndex

PLAYGROUND = Path(__file__).with_name("playground.html")
ROUTES = ("/", "/health", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/embeddings", "/v1/classify",
          "/v1/rerank", "/v1/search", "/v1/images/generations", "/v1/audio/generations",
          "/v1/audio/transcriptions")


@dataclass(frozen=True)
class ServeSettings:
    """The server's limits and batching (the `polymodal serve` flags).

    Attributes:
        max_batch_size: the most requests' items in one forward pass (1: batching off).
        batch_timeout_ms: how long the first item of a batch waits for others.
        api_key: when set, /v1/ requests need `Authorization: Bearer <key>`.
        max_body_bytes: the largest request body (413 past it).
        max_items: the most inputs / documents / messages / parts / choices in one request (413 past it).
        max_text_chars: the longest text in one part.
        max_concurrency: requests in flight at once; past it a 429 with Retry-After.
        request_timeout: seconds a request may take before a 504.
        media: what one media item may be (`MediaLimits`).
    """

    max_batch_size: int = 32
    batch_timeout_ms: float = 10.0
    api_key: str | None = None
    max_body_bytes: int = 32 * 2**20
    max_items: int = 64
    max_text_chars: int = 8192
    max_concurrency: int = 64
    request_timeout: float = 120.0
    media: MediaLimits = field(default_factory=MediaLimits)


class _BodyTooLarge(Exception):
    pass


class _Metrics:
    def __init__(self, batcher_depth: Any):
        self.registry = CollectorRegistry()
        self.requests = Counter("polymodal_requests", "Requests answered, by endpoint and status",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("polymodal_request_seconds", "Time to the last byte, by endpoint", ["endpoint"],
                                 registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.batch = Histogram("polymodal_batch_size", "Items in one forward pass, by kind", ["kind"],
                               registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.errors = Counter("polymodal_errors", "Refused or failed requests, by kind", ["kind"],
                              registry=self.registry)
        self.in_flight = Gauge("polymodal_in_flight", "Requests being answered", registry=self.registry)
        depth = Gauge("polymodal_queue_depth", "Items waiting for a forward pass", registry=self.registry)
        depth.set_function(batcher_depth)


class _Guard:
    """ASGI middleware in front of every route: the bearer key, the body-size cap (while the body streams
    in), the concurrency limit, and the request / latency / error metrics."""

    def __init__(self, app: Any, server: "Server"):
        self.app, self.server = app, server

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        server, settings = self.server, self.server.settings
        path = scope["path"]
        endpoint = path if path in ROUTES or path.startswith("/v1/models") else "other"
        endpoint = "/v1/models" if endpoint.startswith("/v1/models") else endpoint
        started, status = time.perf_counter(), [500]

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        refusal = self._refusal(scope, path)
        try:
            if refusal is not None:
                await _error_response(refusal)(scope, receive, sending)
                return
            server.in_flight += 1
            server.metrics.in_flight.inc()
            try:
                await self.app(scope, self._capped(receive, settings.max_body_bytes), sending)
            finally:
                server.in_flight -= 1
                server.metrics.in_flight.dec()
        finally:
            server.metrics.requests.labels(endpoint, str(status[0])).inc()
            server.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
            if status[0] >= 400:
                server.metrics.errors.labels(str(status[0])).inc()

    def _refusal(self, scope: dict, path: str) -> APIError | None:
        settings = self.server.settings
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if path.startswith("/v1/") and settings.api_key:
            given = headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {settings.api_key}".encode()):
                return APIError(401, "a valid API key is needed: Authorization: Bearer <key>", code="invalid_api_key")
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return APIError(400, "Content-Length: expected a number of bytes", param="Content-Length")
            if int(length) > settings.max_body_bytes:
                return APIError(413, f"body: {length} bytes, at most {settings.max_body_bytes}", param="body",
                                code="too_large")
        if path.startswith("/v1/") and self.server.in_flight >= settings.max_concurrency:
            return APIError(429, f"the server is answering {self.server.in_flight} requests, its limit; retry shortly",
                            code="too_many_requests", headers={"Retry-After": "1"})
        return None

    @staticmethod
    def _capped(receive: Any, limit: int) -> Any:
        seen = [0]

        async def capped() -> dict:
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > limit:
                    raise _BodyTooLarge()
            return message
        return capped


def _error_response(error: APIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


class Server:
    """The served models, the batcher, the indexes and the metrics behind one app."""

    def __init__(self, models: list[ServedModel], settings: ServeSettings, indexes: dict[str, SearchIndex]):
        if not models:
            raise ValueError("serve: at least one model")
        self.models = {m.name: m for m in models}
        if len(self.models) != len(models):
            raise ValueError(f"serve: two models share a name: {[m.name for m in models]}")
        self.settings, self.indexes = settings, indexes
        self.in_flight = 0  # requests being answered (the guard counts them)
        self.batcher = Batcher(settings.max_batch_size, settings.batch_timeout_ms,
                               on_batch=lambda key, size: self.metrics.batch.labels(str(key[0])).observe(size),
                               in_flight=lambda: self.in_flight)
        self.metrics = _Metrics(lambda: self.batcher.depth)

    def model(self, fields: Fields) -> ServedModel:
        default = next(iter(self.models)) if len(self.models) == 1 else None
        name = fields.str("model", default)
        if name is None:
            raise APIError(400, f"model: required (served: {', '.join(self.models)})", param="model")
        if name not in self.models:
            raise APIError(404, f"model: {name!r} is not served here; served: {', '.join(self.models)}",
                           param="model", code="model_not_found")
        return self.models[name]

    async def run(self, key: Any, run: Any, item: Any) -> Any:
        try:
            return await asyncio.wait_for(self.batcher.submit(key, run, item), self.settings.request_timeout)
        except PolymodalError as error:  # what the model refuses (a missing input, a value out of range)
            raise APIError(400, str(error)) from None
        except asyncio.TimeoutError:
            raise APIError(504, f"the request took more than {self.settings.request_timeout:g} s",
                           code="timeout") from None


async def _body(request: Request) -> Fields:
    try:
        raw = await request.body()
    except _BodyTooLarge:
        raise APIError(413, "body: too large", param="body", code="too_large") from None
    return Fields(parse_json(raw))


async def _form(request: Request, max_bytes: int) -> tuple[Fields, Media]:
    """A multipart upload (OpenAI's /v1/audio/transcriptions): its text fields, and its `file` as audio."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise APIError(400, "body: expected a multipart/form-data upload with the audio in `file`", param="body")
    try:
        form = await request.form(max_files=1, max_fields=16)
    except _BodyTooLarge:
        raise APIError(413, "body: too large", param="body", code="too_large") from None
    except Exception as error:  # malformed multipart, too many parts
        raise APIError(400, f"body: not a readable multipart form ({str(error)[:80]})", param="body") from None
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise APIError(400, "file: required, the audio file as a form upload", param="file")
    data = await upload.read()
    if len(data) > max_bytes:
        raise APIError(413, f"file: more than {max_bytes} bytes", param="file", code="too_large")
    if not data:
        raise APIError(400, "file: empty", param="file", code="invalid_audio")
    suffix = Path(upload.filename or "").suffix.lower()
    fields = Fields({k: v for k, v in form.items() if isinstance(v, str)})
    return fields, Media("audio", data, "file", suffix)


def create_app(models: list[ServedModel], settings: ServeSettings | None = None,
               indexes: dict[str, SearchIndex] | None = None) -> FastAPI:
    """The FastAPI app serving `models` (see docs/tutorials/serving.md for every endpoint)."""
    settings = settings or ServeSettings()
    server = Server(models, settings, indexes or {})

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        server.batcher.close()

    app = FastAPI(title="Polymodal", description="An OpenAI-compatible API over trained Polymodal models.",
                  version="1", docs_url="/docs", redoc_url=None, lifespan=lifespan)
    app.state.server = server
    limits = settings.media

    @app.exception_handler(APIError)
    async def api_error(request: Request, error: APIError) -> JSONResponse:
        return _error_response(error)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return _error_response(APIError(error.status_code, f"{request.method} {request.url.path}: {error.detail}"))

    @app.exception_handler(_BodyTooLarge)
    async def too_large(request: Request, error: _BodyTooLarge) -> JSONResponse:
        return _error_response(APIError(413, "body: too large", param="body", code="too_large"))

    @app.exception_handler(Exception)
    async def crashed(request: Request, error: Exception) -> JSONResponse:
        return _error_response(APIError(500, f"the server failed on this request ({type(error).__name__}); "
                                             "it goes on serving others", code="internal_error"))

    # ---------------------------------------------------------------- pages and status
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def playground() -> HTMLResponse:
        return HTMLResponse(PLAYGROUND.read_text())

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models": list(server.models), "queue_depth": server.batcher.depth}

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [m.card() for m in server.models.values()],
                "indexes": {n: i.meta for n, i in server.indexes.items()}}

    @app.get("/v1/models/{name}")
    async def one_model(name: str) -> dict[str, Any]:
        if name not in server.models:
            raise APIError(404, f"model: {name!r} is not served here; served: {', '.join(server.models)}",
                           param="model", code="model_not_found")
        return server.models[name].card()

    # ---------------------------------------------------------------- chat
    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await _body(request)
        model = server.model(body)
        messages = body.list("messages", most=settings.max_items)
        stream = body.bool("stream", False)
        options = body.object("stream_options", None)
        include_usage = bool(options and options.bool("include_usage", False))
        n = body.int("n", 1, low=1, high=min(settings.max_items, 16))
        temperature = body.float("temperature", None, low=0.0, high=2.0)
        top_p = body.float("top_p", None, low=0.0, high=1.0)
        if top_p == 0.0:
            raise APIError(400, "top_p: expected more than 0", param="top_p")
        seed = body.int("seed", 0, low=-(2**63), high=2**63 - 1)
        max_tokens = body.int("max_completion_tokens", None, low=1) or body.int("max_tokens", None, low=1)
        stops = _stops(body)
        texts, media = _conversation(messages, limits, settings)
        model.chat_task()
        sample = (temperature is not None and temperature > 0) or (top_p is not None and temperature != 0)
        task_limit = _chat_limit(model)
        item = ChatItem(text=texts, media={}, n=n, max_tokens=max_tokens or task_limit, sample=sample,
                        temperature=temperature or 1.0, top_p=top_p if top_p is not None else 1.0, seed=seed % 2**63)
        scratch, streaming = Scratch(), False
        try:
            if media:
                item.media = await run_in_threadpool(lambda: {k: materialise(v, scratch, limits)
                                                              for k, v in media.items()})
            prompt_tokens = model.check_chat(item)
            created, ident = int(time.time()), f"chatcmpl-{uuid.uuid4().hex}"
            if stream:  # the stream owns the folder from here, and removes it when it ends
                streaming = True
                return StreamingResponse(_stream(server, model, item, stops, ident, created, prompt_tokens,
                                                 include_usage, scratch), media_type="text/event-stream")
            result = await server.run(model.chat_key(item), model.run_chat, item)
            return _completion(model, result, stops, ident, created, prompt_tokens)
        finally:
            if not streaming:
                scratch.close()

    # ---------------------------------------------------------------- embeddings, classes, reranking, search
    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> dict[str, Any]:
        body = await _body(request)
        model = server.model(body)
        raw = body.value.get("input")
        if raw is None:
            raise APIError(400, "input: required (a string, or a list of strings or media items)", param="input")
        items = [raw] if isinstance(raw, (str, dict)) else raw
        if not isinstance(items, list) or not items:
            raise APIError(400, "input: expected a string, an item, or a non-empty list of them", param="input")
        if len(items) > settings.max_items:
            raise APIError(413, f"input: {len(items)} items, at most {settings.max_items} in one request",
                           param="input", code="too_many_items")
        if all(isinstance(i, int) and not isinstance(i, bool) for i in items) or \
                any(isinstance(i, list) for i in items):
            raise APIError(400, "input: token arrays are not taken; send text", param="input")
        fmt = body.str("encoding_format", "float", choices=("float", "base64"))
        dims = body.int("dimensions", None, low=1)
        if dims is not None and dims != model.model.system.model.backbone.embed_dim:
            raise APIError(400, f"dimensions: model {model.name!r} embeds in "
                                f"{model.model.system.model.backbone.embed_dim} dimensions only, got {dims}",
                           param="dimensions")
        vectors, tokens = await _embed_items(server, model, items, "input")
        data = [{"object": "embedding", "index": i,
                 "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode() if fmt == "base64" else v.tolist()}
                for i, v in enumerate(vectors)]
        return {"object": "list", "data": data, "model": model.name,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    @app.post("/v1/classify")
    async def classify(request: Request) -> dict[str, Any]:
        body = await _body(request)
        model = server.model(body)
        task = model.classifier(body.str("task", None))
        raw = body.value.get("input")
        if raw is None or raw == []:
            raise APIError(400, "input: required (an item, or a list of items; an item: a part or a list of "
                                "parts, one per modality the task reads)", param="input")
        items = raw if isinstance(raw, list) else [raw]
        if len(items) > settings.max_items:
            raise APIError(413, f"input: {len(items)} items, at most {settings.max_items} in one request",
                           param="input", code="too_many_items")
        labels_count = len(model.model.system.model.tasks[task].data.vocab)
        top_k = body.int("top_k", 1, low=1, high=labels_count)
        with Scratch() as scratch:
            examples = []
            for i, raw_item in enumerate(items):
                parts = raw_item if isinstance(raw_item, list) else [raw_item]
                example = await _example(parts, f"input[{i}]", task, scratch, limits, settings, model)
                examples.append(example)
            results = await asyncio.gather(*(server.run(("classify", model.name, task),
                                                        lambda ex, t=task: model.run_classify(t, ex), e)
                                             for e in examples))
        data = []
        for i, (labels, probs) in enumerate(results):
            order = np.argsort(-probs)[:top_k]
            data.append({"index": i, "label": labels[order[0]], "score": float(probs[order[0]]),
                         "top": [{"label": labels[j], "score": float(probs[j])} for j in order]})
        return {"object": "list", "model": model.name, "task": task, "data": data}

    @app.post("/v1/rerank")
    async def rerank(request: Request) -> dict[str, Any]:
        body = await _body(request)
        model = server.model(body)
        if "query" not in body.value:
            raise APIError(400, "query: required (a string or a media item)", param="query")
        documents = body.list("documents", most=settings.max_items)
        top_n = body.int("top_n", len(documents), low=1)
        give_back = body.bool("return_documents", False)
        vectors, tokens = await _embed_items(server, model, [body.value["query"], *documents], "query",
                                             names=["query", *[f"documents[{i}]" for i in range(len(documents))]])
        scores = np.stack(vectors[1:]) @ vectors[0]
        order = np.argsort(-scores, kind="stable")[:top_n]
        results = []
        for i in order:
            row = {"index": int(i), "relevance_score": float(scores[i])}
            if give_back:
                row["document"] = {"text": documents[i]} if isinstance(documents[i], str) else documents[i]
            results.append(row)
        return {"model": model.name, "results": results, "usage": {"total_tokens": tokens}}

    @app.post("/v1/search")
    async def search(request: Request) -> dict[str, Any]:
        body = await _body(request)
        if not server.indexes:
            raise APIError(400, "no index is served (start the server with --index DIR)", param="index",
                           code="no_index")
        name = body.str("index", next(iter(server.indexes)) if len(server.indexes) == 1 else None)
        if name is None or name not in server.indexes:
            raise APIError(404 if name else 400, f"index: {'required' if name is None else repr(name) + ' is not served'}"
                                                 f"; served: {', '.join(server.indexes)}", param="index")
        index = server.indexes[name]
        model = next((m for m in server.models.values() if Path(m.model.folder).resolve() == index.model), None)
        if model is None:
            raise APIError(400, f"index {name!r} was built with {index.model}, which is not served here",
                           param="index")
        if "query" not in body.value:
            raise APIError(400, "query: required (a string or a media item)", param="query")
        top_k = body.int("top_k", 10, low=1, high=1000)
        vectors, _ = await _embed_items(server, model, [body.value["query"]], "query", names=["query"])
        hits = await run_in_threadpool(index.search, np.stack(vectors), top_k)
        return {"object": "list", "index": name, "model": model.name,
                "data": [{"id": str(r.get("id", "")), "score": s, "record": r} for r, s in hits[0]]}

    # ---------------------------------------------------------------- drawings and sounds
    @app.post("/v1/images/generations")
    async def images(request: Request) -> dict[str, Any]:
        body = await _body(request)
        model = server.model(body)
        model.drawer("image")
        wanted = _drawing_request(body, settings)
        size = body.str("size", "auto")
        fixed = model.draw_size()
        if size not in ("auto", fixed):
            raise APIError(400, f"size: model {model.name!r} draws {fixed} images only, got {size!r}", param="size")
        body.str("response_format", "b64_json", choices=("b64_json",))
        pngs = await _alone(server, "images", model, model.run_images, wanted)
        return {"created": int(time.time()), "data": [{"b64_json": base64.b64encode(p).decode(),
                                                       "revised_prompt": wanted["prompt"]} for p in pngs]}

    @app.post("/v1/audio/generations")
    async def sounds(request: Request) -> dict[str, Any]:
        body = await _body(request)
        model = server.model(body)
        model.drawer("audio")
        wanted = _drawing_request(body, settings)
        body.str("response_format", "wav", choices=("wav",))
        waves = await _alone(server, "audio", model, model.run_audio, wanted)
        return {"created": int(time.time()), "data": [{"b64_json": base64.b64encode(w).decode(), "format": "wav"}
                                                      for w in waves]}

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request) -> Any:
        fields, media = await _form(request, limits.max_bytes)
        model = server.model(fields)
        task = model.transcriber(fields.str("task", None))
        fmt = fields.str("response_format", "json", choices=("json", "text"))
        fields.str("language", None)  # accepted as OpenAI's clients send it; the model knows its language
        with Scratch() as scratch:
            path = await run_in_threadpool(materialise, media, scratch, limits)
            text = await server.run(("transcribe", model.name, task),
                                    lambda paths, t=task: model.run_transcribe(t, paths), str(path))
        return PlainTextResponse(text) if fmt == "text" else {"text": text}

    app.add_middleware(_Guard, server=server)
    return app


# -------------------------------------------------------------------- request pieces

def _stops(body: Fields) -> list[str]:
    raw = body.value.get("stop")
    if raw is None:
        return []
    stops = [raw] if isinstance(raw, str) else raw
    if not isinstance(stops, list) or len(stops) > 4 or not all(isinstance(s, str) and s for s in stops):
        raise APIError(400, "stop: expected a non-empty string or a list of at most 4 of them", param="stop")
    return stops


def _conversation(messages: list, limits: MediaLimits, settings: ServeSettings) -> tuple[str | None, dict[str, Media]]:
    """The last user message's text, and the media of the user messages (one item per modality)."""
    text, media, users = None, {}, 0
    for i, raw in enumerate(messages):
        message = Fields(raw, f"messages[{i}]")
        role = message.str("role", choices=("system", "developer", "user", "assistant", "tool"))
        content = message.value.get("content")
        if content is None and role == "assistant":
            continue
        if isinstance(content, str):
            parts: list = [content]
        elif isinstance(content, list):
            parts = content
            if len(parts) > settings.max_items:
                raise APIError(413, f"messages[{i}].content: {len(parts)} parts, at most {settings.max_items}",
                               param=f"messages[{i}].content", code="too_many_items")
        else:
            raise APIError(400, f"messages[{i}].content: expected a string or a list of parts",
                           param=f"messages[{i}].content")
        words = []
        for j, part in enumerate(parts):
            kind, value = read_part(part, f"messages[{i}].content[{j}]", limits, settings.max_text_chars)
            if role != "user":
                if kind != "text":
                    raise APIError(400, f"messages[{i}].content[{j}]: media go in user messages", param=f"messages[{i}]")
                continue
            if kind == "text":
                words.append(value)
            elif kind in media:
                raise APIError(400, f"messages[{i}].content[{j}]: a second {kind}; a model reads one per request",
                               param=f"messages[{i}].content[{j}]")
            else:
                media[kind] = value
        if role == "user":
            text, users = " ".join(w for w in words if w) or None, users + 1
    if not users:
        raise APIError(400, "messages: expected at least one user message", param="messages")
    return text, media


def _chat_limit(model: ServedModel) -> int:
    name = model.chat_task()
    head = model.model.system.model.tasks[name]
    return head.generation.max_new_tokens if hasattr(head, "generation") else 1


async def _example(parts: list, param: str, task: str, scratch: Scratch, limits: MediaLimits,
                   settings: ServeSettings, model: ServedModel) -> dict[str, Any]:
    """One example for a classification task: its parts (one per modality the task reads), materialised."""
    reads, example = model.classifier_reads(task), {}
    for j, part in enumerate(parts):
        where = param if len(parts) == 1 else f"{param}[{j}]"
        kind, value = await run_in_threadpool(read_part, part, where, limits, settings.max_text_chars)
        if kind not in reads:
            raise APIError(400, f"{where}: this task reads {', '.join(reads)}, not {kind}", param=where,
                           code="unsupported_media")
        if kind == "text":
            model.check_text(value, where)
            example[kind] = value
        else:
            example[kind] = await run_in_threadpool(materialise, value, scratch, limits)
    missing = [m for m in model.model.system.model.tasks[task].data.required_modalities if m not in example]
    if missing or not example:
        raise APIError(400, f"{param}: this task reads {', '.join(reads)}; missing: {', '.join(missing or reads)}",
                       param=param)
    return example


async def _embed_items(server: Server, model: ServedModel, items: list, param: str,
                       names: list[str] | None = None) -> tuple[list[np.ndarray], int]:
    """Each item's embedding (run through the batcher, one item per submission), and the text tokens."""
    settings, limits = server.settings, server.settings.media
    tokens = 0
    with Scratch() as scratch:
        ready = []  # every item checked before any is submitted
        for i, raw in enumerate(items):
            where = names[i] if names else f"{param}[{i}]"
            if isinstance(raw, str):  # text: no media to read, no thread needed
                kind, value = read_part(raw, where, limits, settings.max_text_chars)
            else:
                kind, value = await run_in_threadpool(read_part, raw, where, limits, settings.max_text_chars)
            model.check_embeds(kind, where)
            if kind == "text":
                model.check_text(value, where)
                tokens += model.count_tokens(value)
            else:
                value = await run_in_threadpool(materialise, value, scratch, limits)
            ready.append((kind, value))
        vectors = await asyncio.gather(*(server.run(("embed", model.name, kind), lambda vs, k=kind: model.run_embed(k, vs),
                                                    value) for kind, value in ready))
    return list(vectors), tokens


async def _alone(server: Server, kind: str, model: ServedModel, run: Callable[[dict[str, Any]], Any],
                 wanted: dict[str, Any]) -> Any:
    """`run(wanted)` on the batcher's worker, in a batch of its own (a drawing's seed drives its own
    generator, so requests are not batched together; n drawings of one request are)."""
    return await server.run((kind, model.name, uuid.uuid4().hex), lambda batch: [run(batch[0])], wanted)


def _drawing_request(body: Fields, settings: ServeSettings) -> dict[str, Any]:
    return {"prompt": body.str("prompt", max_length=settings.max_text_chars),
            "n": body.int("n", 1, low=1, high=min(settings.max_items, 16)),
            "guidance": body.float("guidance", None, low=0.0, high=50.0),
            "seed": body.int("seed", 0, low=0, high=2**63 - 1)}


# -------------------------------------------------------------------- chat responses

def _cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    at = min((text.find(s) for s in stops if s in text), default=-1)
    return (text[:at], True) if at >= 0 else (text, False)


def _completion(model: ServedModel, result: Any, stops: list[str], ident: str, created: int,
                prompt_tokens: int) -> dict[str, Any]:
    choices, completion = [], 0
    for c, (ids, finish) in enumerate(zip(result.ids, result.finish)):
        text, stopped = _cut_at_stop(model.decode(ids), stops)
        completion += len(ids)
        choices.append({"index": c, "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop" if stopped else finish, "logprobs": None})
    return {"id": ident, "object": "chat.completion", "created": created, "model": model.name, "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                      "total_tokens": prompt_tokens + completion}}


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload)}\n\n"


async def _stream(server: Server, model: ServedModel, item: ChatItem, stops: list[str], ident: str, created: int,
                  prompt_tokens: int, include_usage: bool, scratch: Scratch) -> AsyncIterator[str]:
    """Server-sent events: a role chunk, content deltas as tokens are made, a finish chunk per choice, the
    usage chunk (`stream_options.include_usage`), then `[DONE]`."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    item.emit = lambda choice, token: loop.call_soon_threadsafe(queue.put_nowait, (choice, token))
    base = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model.name}
    ids: list[list[int]] = [[] for _ in range(item.n)]
    sent, done = [""] * item.n, [False] * item.n
    hold = max((len(s) for s in stops), default=1) - 1

    def deltas(choice: int, final: bool) -> list[str]:
        if done[choice]:
            return []
        text, stopped = _cut_at_stop(model.decode(ids[choice]), stops)
        if not final and not stopped:
            text = text[: max(len(sent[choice]), len(text) - hold)] if hold else text
            if text.endswith("\ufffd"):
                return []
        out = []
        if len(text) > len(sent[choice]):
            out.append(_sse({**base, "choices": [{"index": choice, "delta": {"content": text[len(sent[choice]):]},
                                                  "finish_reason": None}]}))
            sent[choice] = text
        if stopped:
            done[choice] = True
            out.append(_sse({**base, "choices": [{"index": choice, "delta": {}, "finish_reason": "stop"}]}))
        return out

    try:
        for c in range(item.n):
            yield _sse({**base, "choices": [{"index": c, "delta": {"role": "assistant", "content": ""},
                                             "finish_reason": None}]})
        job = asyncio.ensure_future(server.run(model.chat_key(item), model.run_chat, item))
        while not (job.done() and queue.empty()):
            getter = asyncio.ensure_future(queue.get())
            finished, _ = await asyncio.wait({getter, job}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in finished:
                getter.cancel()
                continue
            choice, token = getter.result()
            ids[choice].append(token)
            for chunk in deltas(choice, final=False):
                yield chunk
        try:
            result = job.result()
        except APIError as error:
            yield _sse(error.body())
            yield "data: [DONE]\n\n"
            return
        for c in range(item.n):
            ids[c] = result.ids[c]
            for chunk in deltas(c, final=True):
                yield chunk
            if not done[c]:
                yield _sse({**base, "choices": [{"index": c, "delta": {}, "finish_reason": result.finish[c]}]})
        if include_usage:
            completion = sum(len(i) for i in result.ids)
            yield _sse({**base, "choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                                                         "total_tokens": prompt_tokens + completion}})
        yield "data: [DONE]\n\n"
    finally:
        scratch.close()
