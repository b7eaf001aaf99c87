"""Serving throughput and latency: `polymodal serve` under concurrent clients, dynamic batching on and off.

Runs of shipped recipes (trained here for `--steps` steps on the built-in benchmark unless `--clip-run`,
`--minilm-run` and `--chat-run` name trained runs): for `/v1/embeddings` of text, `shapes-clip.yaml` (a tiny
text tower, ~0.1 ms a text: what the server itself costs a request shows) and `shapes-clip-minilm.yaml` (the
real 22M-parameter all-MiniLM-L6-v2 text tower: a model whose own cost dominates, as in real serving); for
`/v1/chat/completions`, `caption-image.yaml` (an image in, its caption out).

For each model, two server processes, batching on (`--max-batch-size 32 --batch-timeout-ms 10`, the
defaults) and off (`--max-batch-size 1`); at each concurrency (1, 8, 32) each answers `--requests` requests
from `concurrency` clients that each send the next one as soon as theirs is answered, in `--rounds`
alternating rounds (on, off, off, on, ...: a slow spell of a shared machine falls on both): requests/s and
p50 / p99 latency of the median round. Streaming chat at concurrency 8 gives time to first token (TTFT) and
time per output token after it (TPOT), `vllm bench serve`'s way.

`embed_batching_speedup` is requests/s with batching over without at concurrency 32, the median over
rounds, for each embedding model. The clients run in this process on the same machine as the server (on a
2-core CPU they share it). The last line printed is one JSON object with every figure.
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
    p.add_argument("--requests", type=int, default=512, help="embedding requests per setting")
    p.add_argument("--minilm-requests", type=int, default=192, help="MiniLM embedding requests per setting")
    p.add_argument("--chat-requests", type=int, default=48, help="chat requests per setting")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds of batching on and off per setting")
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


def _compare(run: Path, path: str, bodies: list[dict], levels: list[int], args: argparse.Namespace, label: str,
             stream: bool = False) -> tuple[dict, float]:
    """Batching on and off for one model: both servers up at once, measured in alternating rounds (so a slow
    spell of the machine falls on both), each setting's round of median requests/s kept; and the median over
    rounds of on / off requests/s at the top concurrency."""
    results: dict = {}
    ratios = []
    with Server(run, 32, args.threads) as on, Server(run, 1, args.threads) as off:
        servers = {"on": on, "off": off}
        for server in servers.values():
            asyncio.run(_load(server.url, path, bodies[:8], 2))  # warm-up
        for c in levels:
            rounds: dict[str, list[dict]] = {"on": [], "off": []}
            for r in range(args.rounds):
                for batching in (("on", "off") if r % 2 == 0 else ("off", "on")):
                    rounds[batching].append(asyncio.run(_load(servers[batching].url, path, bodies, c)))
            for batching, figures in rounds.items():
                results[f"{batching}/c{c}"] = {**sorted(figures, key=lambda f: f["rps"])[len(figures) // 2],
                                               "rounds_rps": [f["rps"] for f in figures]}
                print(f"{label} batching {batching:3s} concurrency {c:2d}: {results[f'{batching}/c{c}']}", flush=True)
            if c == max(levels):
                ratios = [a["rps"] / b["rps"] for a, b in zip(rounds["on"], rounds["off"])]
        if stream:
            for batching, server in servers.items():
                results[f"{batching}/stream_c8"] = asyncio.run(_stream(server.url, bodies, 8))
                print(f"{label} batching {batching:3s} streamed at 8: {results[f'{batching}/stream_c8']}", flush=True)
    return results, round(statistics.median(ratios), 2)


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
    results: dict = {"embeddings": {}, "chat": {}}
    speedups: dict = {}
    for name, run in embedders.items():
        bodies = embed_bodies[:args.minilm_requests] if "minilm" in name else embed_bodies
        results["embeddings"][name], speedups[name] = _compare(run, "/v1/embeddings", bodies, levels, args,
                                                               f"embeddings {name:18s}")
    results["chat"], chat_speedup = _compare(chat, "/v1/chat/completions", chat_bodies, levels, args,
                                             f"chat       {'caption-image':18s}", stream=True)
    summary = {"embed_batching_speedup": speedups, "chat_batching_speedup": chat_speedup, "concurrency": max(levels),
               "rounds": args.rounds, **results}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
