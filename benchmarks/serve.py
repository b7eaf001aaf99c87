"""Serving throughput and latency: `polymodal serve` under concurrent clients, dynamic batching on and off.

Runs of shipped recipes (trained here for `--steps` steps on the built-in benchmark unless `--clip-run`,
`--minilm-run` and `--chat-run` name trained runs): for `/v1/embeddings` of text, `shapes-clip.yaml` (a tiny
text tower, ~0.1 ms a text: what the server itself costs a request shows) and `shapes-clip-minilm.yaml` (the
real 22M-parameter all-MiniLM-L6-v2 text tower: a model whose own cost dominates, as in real serving); for
`/v1/chat/completions`, `caption-image.yaml` (an image in, its caption out). For each endpoint, each concurrency (1, 8, 32) and
batching on (`--max-batch-size 32 --batch-timeout-ms 10`, the defaults) or off (`--max-batch-size 1`), a
fresh server process answers `--requests` requests from `concurrency` clients that each send the next one
as soon as theirs is answered: requests/s, and p50 / p99 latency. Streaming chat at concurrency 8 gives time
to first token (TTFT) and time per output token after it (TPOT), `vllm bench serve`'s way.

`embed_batching_speedup` is requests/s with batching over without, at concurrency 32, for each embedding
model. The clients run in
this process on the same machine as the server (on a 2-core CPU they share it). The last line printed is one
JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).parents[1]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clip-run", default=None, help="a shapes-clip run (default: train one here)")
    p.add_argument("--minilm-run", default=None, help="a shapes-clip-minilm run (default: train one here)")
    p.add_argument("--chat-run", default=None, help="a caption-image run (default: train one here)")
    p.add_argument("--steps", type=int, default=30, help="training steps of the runs made here")
    p.add_argument("--requests", type=int, default=256, help="embedding requests per setting")
    p.add_argument("--chat-requests", type=int, default=48, help="chat requests per setting")
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--threads", type=int, default=0, help="the server's torch threads (0: its default)")
    return p.parse_args()


def _train(config: str, data: Path, out: Path, steps: int) -> Path:
    sets = [f"data.{s}={data / f'{s}.jsonl'}" for s in ("train", "val", "test")]
    subprocess.run([sys.executable, "-m", "polymodal.cli", "train", str(ROOT / "configs" / config), "--out", str(out),
                    "--set", *sets, f"train.max_steps={steps}", "train.val_every=0", "train.progress=false"],
                   check=True, stdout=subprocess.DEVNULL)
    return out


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`polymodal serve RUN` in its own process, for one setting."""

    def __init__(self, run: Path, batch: int, threads: int):
        self.port = _port()
        env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
        self.process = subprocess.Popen([sys.executable, "-m", "polymodal.cli", "serve", f"bench={run}", "--port",
                                         str(self.port), "--device", "cpu", "--max-batch-size", str(batch),
                                         "--max-concurrency", "256"], env=env, stdout=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("the server did not start")
            time.sleep(0.2)

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


async def _load(url: str, path: str, bodies: list[dict], concurrency: int) -> dict:
    """Send `bodies` from `concurrency` keep-alive connections; requests/s and latency percentiles (ms).

    The client is a few lines of asyncio writing HTTP/1.1 itself, with every request encoded beforehand: on a
    2-core machine the client shares the CPU with the server, and a general-purpose client (httpx) would
    spend more of it than the server's own request handling (`wrk`'s reason to be written in C)."""
    host, port = url.removeprefix("http://").split(":")
    payloads = [json.dumps(b).encode() for b in bodies]
    requests = [(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(p)}\r\n\r\n").encode() + p for p in payloads]
    queue = list(reversed(requests))
    latencies: list[float] = []

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while queue:
                request = queue.pop()
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
                body = await reader.readexactly(length)
                if status != 200:
                    raise RuntimeError(f"{path}: HTTP {status}: {body[:200]!r}")
                latencies.append(time.perf_counter() - started)
        finally:
            writer.close()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    latencies.sort()
    return {"rps": round(len(bodies) / wall, 2), "p50_ms": round(1000 * statistics.median(latencies), 1),
            "p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 1)}


async def _stream(url: str, bodies: list[dict], concurrency: int) -> dict:
    """Streamed chat: time to first content token and time per output token after it (ms), medians."""
    first, per_token = [], []
    queue = list(reversed(bodies))
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        async def worker() -> None:
            while queue:
                body = queue.pop()
                started, times = time.perf_counter(), []
                async with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
                    async for line in response.aiter_lines():
                        if line.startswith("data: {") and '"content": "' in line and '"content": ""' not in line:
                            times.append(time.perf_counter() - started)
                if times:
                    first.append(times[0])
                    if len(times) > 1:
                        per_token.append((times[-1] - times[0]) / (len(times) - 1))
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"ttft_ms": round(1000 * statistics.median(first), 1) if first else None,  # None: no text came
            "tpot_ms": round(1000 * statistics.median(per_token), 1) if per_token else None}


def main() -> None:
    args = parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    work = Path(tempfile.mkdtemp(prefix="polymodal-bench-serve-"))
    data = work / "data"
    subprocess.run([sys.executable, "-m", "polymodal.cli", "synth", "--out", str(data), "--n-train", "512",
                    "--n-val", "64", "--n-test", "256"], check=True, stdout=subprocess.DEVNULL)
    embedders = {name: Path(given) if given else _train(f"{name}.yaml", data, work / name, args.steps)
                 for name, given in (("shapes-clip", args.clip_run), ("shapes-clip-minilm", args.minilm_run))}
    chat = Path(args.chat_run) if args.chat_run else _train("caption-image.yaml", data, work / "chat", args.steps)
    records = [json.loads(line) for line in (data / "test.jsonl").read_text().splitlines()]
    texts = [r["text"] for r in records]
    images = ["data:image/png;base64," + base64.b64encode((data / r["image"]).read_bytes()).decode() for r in records]
    embed_bodies = [{"input": texts[i % len(texts)]} for i in range(args.requests)]
    chat_bodies = [{"max_tokens": args.max_tokens, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": images[i % len(images)]}}]}]} for i in range(args.chat_requests)]
    results: dict = {"embeddings": {name: {} for name in embedders}, "chat": {}}
    for batching, size in (("on", 32), ("off", 1)):
        for name, run in embedders.items():
            with Server(run, size, args.threads) as server:
                asyncio.run(_load(server.url, "/v1/embeddings", embed_bodies[:16], 4))  # warm-up
                for c in levels:
                    figures = asyncio.run(_load(server.url, "/v1/embeddings", embed_bodies, c))
                    results["embeddings"][name][f"{batching}/c{c}"] = figures
                    print(f"embeddings {name:18s} batching {batching:3s} concurrency {c:2d}: {figures}", flush=True)
        with Server(chat, size, args.threads) as server:
            asyncio.run(_load(server.url, "/v1/chat/completions", chat_bodies[:4], 2))
            for c in levels:
                figures = asyncio.run(_load(server.url, "/v1/chat/completions", chat_bodies, c))
                results["chat"][f"{batching}/c{c}"] = figures
                print(f"chat       {'caption-image':18s} batching {batching:3s} concurrency {c:2d}: {figures}", flush=True)
            streamed = asyncio.run(_stream(server.url, chat_bodies, 8))
            results["chat"][f"{batching}/stream_c8"] = streamed
            print(f"chat       {'caption-image':18s} batching {batching:3s} streamed at 8: {streamed}", flush=True)
    top = max(levels)
    summary = {"embed_batching_speedup": {name: round(r[f"on/c{top}"]["rps"] / r[f"off/c{top}"]["rps"], 2)
                                          for name, r in results["embeddings"].items()},
               "chat_batching_speedup": round(results["chat"][f"on/c{top}"]["rps"] / results["chat"][f"off/c{top}"]["rps"], 2),
               "concurrency": top, **results}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
