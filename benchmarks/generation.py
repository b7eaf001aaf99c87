"""Generation speed: KV-cached against uncached decoding, and Polymodal's decoder against HF `generate`.

One GPT-2-sized configuration (built from a config, random weights), the same prompts, greedy decoding of
exactly `--new-tokens` tokens (no stop token) at batch 1 and batch 16:
  cached:   `polymodal.generation.generate` over `TextDecoder.session` (prefill, then one token per step);
  uncached: the same loop, re-running the whole sequence every step (what decoding costs without a cache);
  hf:       `GPT2LMHeadModel.generate` (with its cache, SDPA attention) on the same weights.
Each figure is generated tokens / median wall time over `--iters` repeats, the variants alternating so
drift and background load hit them alike.

`cache_speedup` is cached / uncached tokens per second (the smaller of the two batch sizes' ratios);
`hf_ratio` is ours (cached) / HF tokens per second (the smaller of the two), so above 1 means ours is
faster. Greedy outputs of ours and HF are checked equal before timing. The last line printed is one JSON
object with the ratios and the raw figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

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
    return p.parse_args()


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


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
    results: dict[str, dict[str, float]] = {}
    for batch in (int(b) for b in args.batches.split(",")):
        ids = torch.randint(1, args.vocab, (batch, args.prompt), generator=torch.Generator().manual_seed(batch))
        mask = torch.ones_like(ids, dtype=torch.bool)
        variants = {
            "cached": lambda: generate(lambda r: ours.session(repeat=r), ids, mask, settings),
            "uncached": lambda: generate(lambda r: UncachedSession(ours), ids, mask, settings),
            "hf": lambda: hf.generate(input_ids=ids, attention_mask=mask.long(), max_new_tokens=args.new_tokens,
                                      min_new_tokens=args.new_tokens, do_sample=False, num_beams=1),
        }
        expected = hf.generate(input_ids=ids, attention_mask=mask.long(), max_new_tokens=args.new_tokens,
                               do_sample=False)[:, args.prompt:].tolist()
        if variants["cached"]() != expected or variants["uncached"]() != expected:
            raise SystemExit(f"batch {batch}: our greedy tokens differ from HF generate's")
        for fn in variants.values():  # warm-up
            fn()
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.iters):
            for name, fn in variants.items():
                times[name].append(timed(fn))
        tokens = batch * args.new_tokens
        results[f"batch{batch}"] = {name: tokens / statistics.median(t) for name, t in times.items()}
        row = results[f"batch{batch}"]
        print(f"batch {batch:>2}: cached {row['cached']:8.1f} tok/s  uncached {row['uncached']:8.1f}  "
              f"hf {row['hf']:8.1f}  (cache ×{row['cached'] / row['uncached']:.2f}, ours/hf ×"
              f"{row['cached'] / row['hf']:.2f})")
    summary = {
        "cache_speedup": min(r["cached"] / r["uncached"] for r in results.values()),
        "hf_ratio": min(r["cached"] / r["hf"] for r in results.values()),
        "tokens_per_s": results,
        "sizes": {"layers": args.layers, "width": args.width, "heads": args.heads, "vocab": args.vocab,
                  "prompt": args.prompt, "new_tokens": args.new_tokens, "threads": torch.get_num_threads()},
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
