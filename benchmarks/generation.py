"""Generation speed: KV-cached against uncached decoding, and Polymodal's decoder against HF `generate`.

One GPT-2-sized configuration (built from a config, random weights), the same prompts, greedy decoding of
exactly `--new-tokens` tokens (no stop token) at batch 1 and batch 16:
  cached:   `polymodal.generation.generate` over `TextDecoder.session` (prefill, then one token per step);
  uncached: the same loop, re-running the whole sequence every step (what decoding costs without a cache);
  hf:       `GPT2LMHeadModel.generate` (with its cache, SDPA attention) on the same weights.
Each figure is generated tokens / median wall time over `--iters` repeats, the variants alternating so
drift and background load hit them alike.

Everything is measured twice: alone, then under a fixed background load the benchmark starts and stops
itself (`--load`, default one process per core, each multiplying 256 × 256 matrices on one thread, as a
test suite's workers or a data loader's would), since a busy machine is where decoding runs many small
operations on threads that must wait for each other (`--load 0`: alone only).

`cache_speedup` is cached / uncached tokens per second (the smaller of the two batch sizes' ratios);
`hf_ratio` is ours (cached) / HF tokens per second (the smaller of the two), so above 1 means ours is
faster; `hf_ratio_loaded` the same under the background load. Greedy outputs of ours and HF are checked equal before timing. The last line printed is one JSON
object with the ratios and the raw figures.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from polymodal.generation import GenerationSettings, generate
from polymodal.models.decoder import TextDecoder
from polymodal.models.gpt2 import decoder_from_gpt2


class UncachedSession:
    """A `generation.Decoding` that keeps no cache: every step runs the decoder over the whole sequence."""

    def __init__(self, decoder: TextDecoder):
        self.decoder, self.ids, self.mask = decoder, None, None

    def prefill(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        self.ids, self.mask = ids, mask
        return self.decoder(ids, mask)[:, -1]

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        self.ids = torch.cat([self.ids, ids[:, None]], 1)
        if self.mask is not None:
            self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], 1)
        return self.decoder(self.ids, self.mask)[:, -1]

    def reorder(self, index: torch.Tensor) -> None:
        self.ids = self.ids.index_select(0, index)
        self.mask = None if self.mask is None else self.mask.index_select(0, index)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for flag, default in [("layers", 4), ("width", 256), ("heads", 8), ("vocab", 8000), ("prompt", 64),
                          ("new-tokens", 32), ("iters", 5), ("threads", 0)]:
        p.add_argument(f"--{flag}", type=int, default=default)
    p.add_argument("--batches", default="1,16")
    p.add_argument("--load", type=int, default=os.cpu_count() or 2,
                   help="background processes for the loaded measurement (0: none)")
    return p.parse_args()


def _busy(stop: "multiprocessing.synchronize.Event") -> None:
    """One background process: 256 × 256 matrix products on one thread until told to stop."""
    torch.set_num_threads(1)
    a = torch.randn(256, 256)
    while not stop.is_set():
        for _ in range(50):
            a = torch.tanh(a @ a)


@contextmanager
def background_load(processes: int) -> Iterator[None]:
    """`processes` busy processes for the duration of the block (started, then stopped and joined)."""
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    workers = [context.Process(target=_busy, args=(stop,), daemon=True) for _ in range(processes)]
    for worker in workers:
        worker.start()
    time.sleep(1.0)  # let them get going
    try:
        yield
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.terminate()


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(variants: dict[str, Callable[[], object]], iters: int, tokens: int) -> dict[str, float]:
    """Tokens per second of each variant: the median of `iters` alternating repeats, after a warm-up."""
    for fn in variants.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(iters):
        for name, fn in variants.items():
            times[name].append(timed(fn))
    return {name: tokens / statistics.median(t) for name, t in times.items()}


@torch.inference_mode()
def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=args.vocab, n_positions=args.prompt + args.new_tokens, n_embd=args.width,
                        n_layer=args.layers, n_head=args.heads, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    hf = GPT2LMHeadModel(config).eval()
    hf.generation_config.eos_token_id = None  # decode exactly new-tokens tokens, as ours does without stops
    ours = decoder_from_gpt2(hf)
    settings = GenerationSettings(max_new_tokens=args.new_tokens)
    cases = {}
    for batch in (int(b) for b in args.batches.split(",")):
        ids = torch.randint(1, args.vocab, (batch, args.prompt), generator=torch.Generator().manual_seed(batch))
        mask = torch.ones_like(ids, dtype=torch.bool)
        variants = {
            "cached": lambda ids=ids, mask=mask: generate(lambda r: ours.session(repeat=r), ids, mask, settings),
            "uncached": lambda ids=ids, mask=mask: generate(lambda r: UncachedSession(ours), ids, mask, settings),
            "hf": lambda ids=ids, mask=mask: hf.generate(input_ids=ids, attention_mask=mask.long(),
                                                         max_new_tokens=args.new_tokens,
                                                         min_new_tokens=args.new_tokens, do_sample=False, num_beams=1),
        }
        expected = hf.generate(input_ids=ids, attention_mask=mask.long(), max_new_tokens=args.new_tokens,
                               do_sample=False)[:, args.prompt:].tolist()
        if variants["cached"]() != expected or variants["uncached"]() != expected:
            raise SystemExit(f"batch {batch}: our greedy tokens differ from HF generate's")
        cases[batch] = variants
    summary: dict = {}
    for setting in ("alone", "loaded") if args.load else ("alone",):
        results: dict[str, dict[str, float]] = {}
        with background_load(args.load) if setting == "loaded" else _nothing():
            for batch, variants in cases.items():
                row = results[f"batch{batch}"] = measure(variants, args.iters, batch * args.new_tokens)
                print(f"{setting:6s} batch {batch:>2}: cached {row['cached']:8.1f} tok/s  uncached "
                      f"{row['uncached']:8.1f}  hf {row['hf']:8.1f}  (cache ×{row['cached'] / row['uncached']:.2f}, "
                      f"ours/hf ×{row['cached'] / row['hf']:.2f})", flush=True)
        suffix = "" if setting == "alone" else "_loaded"
        summary[f"cache_speedup{suffix}"] = min(r["cached"] / r["uncached"] for r in results.values())
        summary[f"hf_ratio{suffix}"] = min(r["cached"] / r["hf"] for r in results.values())
        summary[f"tokens_per_s{suffix}"] = results
    summary["sizes"] = {"layers": args.layers, "width": args.width, "heads": args.heads, "vocab": args.vocab,
                        "prompt": args.prompt, "new_tokens": args.new_tokens, "threads": torch.get_num_threads(),
                        "load_processes": args.load}
    print(json.dumps(summary))


@contextmanager
def _nothing() -> Iterator[None]:
    yield


if __name__ == "__main__":
    main()
