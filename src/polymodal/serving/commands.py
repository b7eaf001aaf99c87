"""The `polymodal serve` and `polymodal index` commands."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import PolymodalError

DEFAULTS = {"max_batch_size": 32, "batch_timeout_ms": 10.0, "max_concurrency": 64, "max_items": 64,
            "max_body_mb": 32.0, "max_media_mb": 10.0, "max_pixels": 4096 * 4096, "max_audio_seconds": 60.0,
            "max_video_frames": 600, "request_timeout": 120.0}


def _named(spec: str) -> tuple[str, Path]:
    """`NAME=RUN` or `RUN` (named after its folder)."""
    name, sep, path = spec.partition("=")
    if not sep:
        path = spec
        name = Path(spec.rstrip("/")).name
        if name == "model":  # a model folder inside a run: the run's name
            name = Path(spec.rstrip("/")).parent.name
    return name, Path(path)


def settings_from(args: argparse.Namespace):
    from .app import ServeSettings
    from .media import MediaLimits

    media_root = Path(args.media_root) if args.media_root else None
    if media_root is not None and not media_root.is_dir():
        raise PolymodalError(f"--media-root {args.media_root}: not a folder")
    domains = tuple(d.strip().lower() for d in (args.allow_media_domains or "").split(",") if d.strip())
    limits = MediaLimits(max_bytes=int(args.max_media_mb * 2**20), max_pixels=args.max_pixels,
                         max_audio_seconds=args.max_audio_seconds, max_video_frames=args.max_video_frames,
                         media_root=media_root, allow_domains=domains)
    try:
        return ServeSettings(max_batch_size=args.max_batch_size, batch_timeout_ms=args.batch_timeout_ms,
                             api_key=args.api_key or os.environ.get("POLYMODAL_API_KEY") or None,
                             max_body_bytes=int(args.max_body_mb * 2**20), max_items=args.max_items,
                             max_concurrency=args.max_concurrency, request_timeout=args.request_timeout,
                             media=limits)
    except ValueError as error:
        raise PolymodalError(str(error)) from None


def build_app(args: argparse.Namespace):
    """The app `serve` runs, from its arguments (the runs loaded, the indexes opened)."""
    from ..api import load
    from .app import create_app
    from .engine import ServedModel
    from .search import SearchIndex

    if args.max_batch_size < 1:
        raise PolymodalError(f"--max-batch-size: expected at least 1, got {args.max_batch_size}")
    models = []
    for spec in args.runs:
        name, path = _named(spec)
        models.append(ServedModel(name, load(path, device=args.device)))
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise PolymodalError(f"two runs are served under one name ({', '.join(names)}): name them, NAME=RUN")
    indexes = {}
    for spec in args.index or []:
        name, path = _named(spec)
        indexes[name] = SearchIndex(path)
    return create_app(models, settings_from(args), indexes)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    app = build_app(args)
    print(f"serving {', '.join(args.runs)} on http://{args.host}:{args.port} (playground at /, API at /v1, "
          f"metrics at /metrics)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=5)
    return 0


def _index(args: argparse.Namespace) -> int:
    from ..api import load
    from ..data.manifest import read_manifest
    from .search import build_index

    model = load(args.run, device=args.device)
    records = read_manifest(args.data)
    out = build_index(model, records, args.out, modality=args.modality, exact_up_to=args.exact_up_to,
                      log=lambda line: print(line, flush=True) if not args.quiet else None)
    print(f"wrote {out} ({len(records)} records)")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="serve trained runs: an OpenAI-compatible API, a playground page, metrics")
    serve.add_argument("runs", nargs="+", metavar="RUN", help="run folders (NAME=RUN to name one; default: the "
                                                              "folder's name)")
    serve.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: %(default)s; "
                                                                 "0.0.0.0: every interface)")
    serve.add_argument("--port", type=int, default=8000, help="default: %(default)s")
    serve.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    serve.add_argument("--max-batch-size", type=int, default=DEFAULTS["max_batch_size"],
                       help="the most requests' items in one forward pass (1: no batching; default: "
                            "%(default)s)")
    serve.add_argument("--batch-timeout-ms", type=float, default=DEFAULTS["batch_timeout_ms"],
                       help="how long a batch's first request waits for others (default: %(default)s)")
    serve.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1 "
                                                       "(default: $POLYMODAL_API_KEY; none: open)")
    serve.add_argument("--media-root", default=None, help="the folder file: URLs may read from (default: none)")
    serve.add_argument("--allow-media-domains", default="", help="comma-separated hosts http(s) media URLs may "
                                                                 "name (default: none)")
    serve.add_argument("--index", action="append", metavar="DIR", help="a search index (polymodal index), "
                                                                       "NAME=DIR to name it; repeatable")
    serve.add_argument("--max-concurrency", type=int, default=DEFAULTS["max_concurrency"],
                       help="requests in flight; past it 429 with Retry-After (default: %(default)s)")
    serve.add_argument("--max-items", type=int, default=DEFAULTS["max_items"],
                       help="inputs, documents, messages, parts or choices in one request (default: "
                            "%(default)s)")
    serve.add_argument("--max-body-mb", type=float, default=DEFAULTS["max_body_mb"],
                       help="the largest request body; past it 413 (default: %(default)s)")
    serve.add_argument("--max-media-mb", type=float, default=DEFAULTS["max_media_mb"], help="per media item (default: %(default)s)")
    serve.add_argument("--max-pixels", type=int, default=DEFAULTS["max_pixels"], help="per image or frame (default: %(default)s)")
    serve.add_argument("--max-audio-seconds", type=float, default=DEFAULTS["max_audio_seconds"],
                       help="per sound (default: %(default)s)")
    serve.add_argument("--max-video-frames", type=int, default=DEFAULTS["max_video_frames"],
                       help="per clip (default: %(default)s)")
    serve.add_argument("--request-timeout", type=float, default=DEFAULTS["request_timeout"], help="seconds a request may take, then 504 (default: %(default)s)")
    serve.set_defaults(func=_serve)

    index = sub.add_parser("index", help="embed a manifest's records with a run and write a search index (faiss)")
    index.add_argument("run", help="a trained run with a shared embedding space (model.embed_dim)")
    index.add_argument("--data", required=True, help="the manifest whose records to index")
    index.add_argument("--out", required=True, help="the index folder to write")
    index.add_argument("--modality", default=None, help="what to embed of each record (default: the first of "
                                                        "image, video, audio, text they all have)")
    index.add_argument("--exact-up-to", type=int, default=50_000, help="exact search up to this many records; "
                                                                       "HNSW past it (default: %(default)s; benchmarks/search_index.py)")
    index.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    index.add_argument("--quiet", action="store_true", help="no progress lines")
    index.set_defaults(func=_index)
