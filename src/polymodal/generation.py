"""Text generation: greedy, beam search and sampling, with a KV cache throughout.

The same code drives any decoder through a `Decoding` session: Polymodal's `TextDecoder`
(`TextDecoder.session`) and a Hugging Face causal LM (`models.hf_decoder.HFSession`). A batch of prompts of
different lengths is left-padded: each row's text ends at the last column, so every row's next token is
read from the same place, and the padding stays masked at every step.

Beam search follows Hugging Face `generate`'s rules (transformers 4.5x / 5.x), so the same weights and
prompts give the same outputs: 2·K candidates per step from the summed log-probabilities; a candidate that
ends in a stop token, or reaches `max_new_tokens`, is a finished hypothesis if it ranks among the top K,
scored by its log-probability over (generated length)^length_penalty; the search stops once no running
beam can beat the worst of K finished ones.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

NEG = -1.0e9  # the score of an impossible candidate (HF's value, so ties break the same way)
CACHES = ("dynamic", "static")
# rows × decoder parameters below which a decoding step runs on one CPU thread: at batch 1 of a 5M-parameter
# GPT-2 a second thread gained nothing (211.7 against 206.8 tokens/s), at batch 16 it gained 18%
SMALL_STEP = 16_000_000


class Decoding(Protocol):
    """One batch being decoded: what `generate` needs from a decoder."""

    def prefill(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Run the left-padded prompts (B, T) with their mask; the next-token logits (B, V)."""

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        """Append one token per row (B,); the next-token logits (B, V)."""

    def reorder(self, index: torch.Tensor) -> None:
        """Keep rows `index` (B',) of the cache, in that order."""


@dataclass(frozen=True)
class GenerationSettings:
    """How to decode.

    Attributes:
        max_new_tokens: the most tokens generated per prompt (a stop token included).
        num_beams: beams for beam search; 1 for greedy decoding or sampling.
        length_penalty: beam search scores a finished hypothesis as log p / length^length_penalty.
        sample: draw each token from the (filtered) distribution instead of taking the best.
        temperature: divides the logits before sampling.
        top_k: sample only among the k most likely tokens (0: all).
        top_p: sample only among the most likely tokens whose probabilities sum to top_p (nucleus).
        seed: the sampling generator's seed, so the same call draws the same tokens.
        stop_ids: tokens that end a sequence (not included in the output).
        cache: "dynamic", a KV cache that grows by concatenation, or "static", allocated once at the prefill
            for the prompt and `max_new_tokens` and written in place (HF decoders: HF's `StaticCache`).
        compiled: run each step through `torch.compile` (with CUDA graphs on a GPU); needs cache="static".
        threads: CPU threads for the decoding steps (the prefill keeps torch's setting). 0: one thread where
            a step is small (rows × parameters < `SMALL_STEP`) or the machine is busy (at least as many other
            runnable tasks as cores, `machine_busy`), else torch's setting: on a busy machine each
            multi-threaded operation waits for a thread the scheduler has not run, and one thread decoded 2×
            faster there (`benchmarks/generation.py`, loaded).
            The tokens are the eager ones; the first call compiles (seconds on a GPU, minutes on a CPU).
    """

    max_new_tokens: int = 32
    num_beams: int = 1
    length_penalty: float = 1.0
    sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    stop_ids: tuple[int, ...] = ()
    cache: str = "dynamic"
    compiled: bool = False
    threads: int = 0

    def __post_init__(self) -> None:
        if self.cache not in CACHES:
            raise ValueError(f"cache: expected one of {', '.join(CACHES)}, got {self.cache!r}")
        if self.compiled and self.cache != "static":
            raise ValueError("compiled: a compiled step needs cache: static (its tensors keep their addresses)")
        if self.threads < 0:
            raise ValueError(f"threads: expected 0 (chosen per call) or a number of threads, got {self.threads}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens: expected at least 1, got {self.max_new_tokens}")
        if self.num_beams < 1:
            raise ValueError(f"num_beams: expected at least 1, got {self.num_beams}")
        if self.sample and self.num_beams > 1:
            raise ValueError("choose beam search (num_beams > 1) or sampling, not both")
        if self.temperature <= 0:
            raise ValueError(f"temperature: expected > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p: expected a number in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k: expected 0 (off) or a positive number, got {self.top_k}")

    def session_options(self) -> dict[str, object]:
        """What a decoder's `start` takes besides the repeat: nothing for a dynamic cache; else the new
        tokens a static cache makes room for, and whether steps are compiled."""
        return {} if self.cache == "dynamic" else {"new_tokens": self.max_new_tokens, "compile": self.compiled}


def machine_busy(samples: int = 3, *, proc: Path = Path("/proc"), cores: int | None = None) -> bool:
    """True when, besides this process's own threads, at least as many tasks are runnable as there are
    `cores` (default: this process's CPUs): Linux's running count in `proc`/loadavg less this process's
    threads in state R, the least of `samples` reads 0.5 ms apart. Elsewhere, the one-minute load average
    less this process."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    loadavg, own = proc / "loadavg", proc / "self" / "task"
    if not loadavg.is_file():
        return os.getloadavg()[0] - 1 >= cores if hasattr(os, "getloadavg") else False
    others = []
    for i in range(samples):
        running = int(loadavg.read_text().split()[3].split("/")[0])  # "0.52 0.58 0.59 3/211 4242"
        mine = 0
        for task in own.iterdir():
            try:
                mine += (task / "stat").read_text().rsplit(")", 1)[1].split()[0] == "R"
            except (OSError, IndexError):  # a thread that ended meanwhile
                pass
        others.append(running - mine)
        if i + 1 < samples:
            time.sleep(0.0005)
    return min(others) >= cores


def _parameters(session: Any) -> int | None:
    """The parameters of the model behind a decoding session, where it names one."""
    for name in ("decoder", "model", "lm"):
        module = getattr(session, name, None)
        if isinstance(module, torch.nn.Module):
            return sum(p.numel() for p in module.parameters())
    return None


@contextmanager
def decoding_threads(settings: GenerationSettings, session: Any, rows: int, device: torch.device) -> Iterator[None]:
    """The CPU threads of a session's decoding steps (`GenerationSettings.threads`), torch's own after."""
    threads = settings.threads
    if not threads and device.type == "cpu" and torch.get_num_threads() > 1:
        parameters = _parameters(session)
        if (parameters is not None and rows * parameters < SMALL_STEP) or machine_busy():
            threads = 1
    before = torch.get_num_threads()
    if not threads or threads == before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists of different lengths → (B, T) left-padded ids and their (B, T) bool mask."""
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError("every prompt needs at least one token (a start token if nothing else)")
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, length - len(row):] = torch.as_tensor(list(row), dtype=torch.long)
        mask[i, length - len(row):] = True
    return ids, mask


@torch.no_grad()
def generate(start: Callable[..., Decoding], ids: torch.Tensor, mask: torch.Tensor | None,
             settings: GenerationSettings, on_step: Callable[[torch.Tensor], None] | None = None) -> list[list[int]]:
    """Continue each prompt.

    Args:
        start: `start(repeat, **settings.session_options())` opens a session over the batch's memory with
            each row repeated `repeat` times (the number of beams; 1 otherwise).
        ids: (B, T) left-padded prompt ids.
        mask: (B, T) bool, True on real tokens; None: no padding.
        settings: the decoding strategy and its limits.
        on_step: called after each step with its (B,) tokens, -1 for rows already finished (a stop token
            is passed once, in the step that makes it): what a server streams. Greedy and sampled decoding
            only (beam search settles its tokens at the end).

    Returns:
        B lists of generated token ids, each cut before its first stop token.
    """
    if settings.num_beams > 1:
        if on_step is not None:
            raise ValueError("on_step: beam search settles its tokens at the end; stream greedy or sampled decoding")
        return _beam_search(start, ids, mask, settings)
    session = start(1, **settings.session_options())
    logits = session.prefill(ids, mask)
    generator = torch.Generator(device=ids.device).manual_seed(settings.seed) if settings.sample else None
    stop = torch.tensor(settings.stop_ids, dtype=torch.long, device=ids.device)
    done = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    out: list[torch.Tensor] = []
    with decoding_threads(settings, session, ids.shape[0], ids.device):
        for t in range(settings.max_new_tokens):
            token = _sample(logits.float(), settings, generator) if settings.sample else logits.argmax(-1)  # (B,)
            out.append(torch.where(done, -1, token))
            if on_step is not None:
                on_step(out[-1].cpu())
            done = done | torch.isin(token, stop)
            if bool(done.all()) or t + 1 == settings.max_new_tokens:
                break
            logits = session.step(token)
    return _cut(torch.stack(out, dim=1), settings.stop_ids)


def guided(conditional: torch.Tensor, unconditional: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance on logits: `uncond + s · (cond − uncond)` (s = 1: the conditional ones)."""
    return unconditional + scale * (conditional - unconditional)


@torch.no_grad()
def generate_codes(start: Callable[..., Decoding], rows: Sequence[Sequence[int]], pad_id: int, media: Any,
                   settings: GenerationSettings, *, device: torch.device | str = "cpu", guidance: float = 1.0,
                   unconditional: Sequence[int] | None = None) -> torch.Tensor:
    """A tokenizer's codes for each prompt, constrained to its span: exactly `media.length` of them, each
    drawn among the modality's `media.count` codes only (the end marker is implied).

    Args:
        start: opens a decoding session (as `generate`'s).
        rows: each prompt's ids, ending with the modality's begin marker.
        pad_id: the id that left-pads them.
        media: the modality's ids in the vocabulary (`MediaVocabulary`: first, count, length).
        settings: greedy (`sample=False`) or sampling with temperature / top-k / top-p and a seed; the cache.
        guidance: classifier-free guidance's scale; unless 1, each prompt's row is paired with an
            `unconditional` row (the same sequence with no prompt) in the same batch, and each code is
            drawn from `guided` logits; both rows are then fed the drawn code.
        unconditional: the prompt-less row, e.g. `[start, begin]`, or the prompt's places all pads
            (`MediaTargetData.row([])`).

    Returns:
        (B, N) codes (0 ≤ code < media.count).
    """
    pairs = guidance != 1.0
    if pairs and unconditional is None:
        raise ValueError("guidance needs the unconditional row (the sequence without its prompt)")
    all_rows = [*rows, *([unconditional] * len(rows) if pairs else [])]
    ids, mask = left_pad(all_rows, pad_id)
    options = {} if settings.cache == "dynamic" else {"new_tokens": media.length, "compile": settings.compiled}
    session = start(1, **options)
    logits = session.prefill(ids.to(device), mask.to(device))
    generator = torch.Generator(device=logits.device).manual_seed(settings.seed) if settings.sample else None
    out = []
    with decoding_threads(settings, session, ids.shape[0], logits.device):
        for t in range(media.length):
            scores = logits[:, media.first: media.first + media.count].float()  # only this modality's codes
            if pairs:
                conditional, free = scores.chunk(2)
                scores = guided(conditional, free, guidance)
            code = _sample(scores, settings, generator) if settings.sample else scores.argmax(-1)
            out.append(code)
            if t + 1 < media.length:
                token = code + media.first
                logits = session.step(torch.cat([token, token]) if pairs else token)
    return torch.stack(out, 1)


def masked_after(step: int, steps: int, length: int) -> int:
    """MaskGIT's cosine schedule: of `length` codes, how many are still hidden after `step` of `steps`
    parallel passes, ⌊length · cos(π/2 · step/steps)⌋ (all of them before the first, none after the last)."""
    return int(math.floor(length * math.cos(math.pi / 2 * step / steps) + 1e-9))


def training_mask(u: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """(B, N) which codes a masked-token model is trained to restore: in row b, the ⌈cos(π/2 · u_b) · N⌉
    (at least one) codes of lowest `scores` (MaskGIT: the share hidden follows the cosine schedule for a
    uniform u in [0, 1), so every stage of decoding is trained).

    Args:
        u: (B,) uniform draws in [0, 1].
        scores: (B, N) uniform draws: which codes (the lowest ones) are hidden.
    """
    length = scores.shape[1]
    count = torch.ceil(torch.cos(math.pi / 2 * u) * length - 1e-6).clamp(min=1, max=length)  # (B,)
    rank = scores.argsort(1).argsort(1)  # (B, N) each code's rank among its row's scores
    return rank < count[:, None]


@torch.no_grad()
def generate_codes_parallel(forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                            rows: Sequence[Sequence[int]], pad_id: int, mask_id: int, media: Any,
                            settings: GenerationSettings, *, steps: int = 8, device: torch.device | str = "cpu",
                            guidance: float = 1.0, unconditional: Sequence[int] | None = None,
                            reveal_noise: float = 1.0) -> torch.Tensor:
    """A tokenizer's codes for each prompt by MaskGIT's parallel decoding: every code starts hidden (the
    mask token); each of `steps` passes reads the whole sequence, draws a code for every hidden place, and
    keeps the most confident ones, leaving `masked_after(step)` hidden for the next pass.

    Args:
        forward: (ids, mask) → (B, L, V) logits at each position, attention both ways
            (`MultimodalLM.position_logits`).
        rows: each prompt's ids, ending with the modality's begin marker (its codes and end marker follow).
        pad_id: the id that left-pads them; mask_id: the id of a hidden code.
        media: the modality's ids in the vocabulary (`MediaVocabulary`).
        settings: greedy (`sample=False`) or sampling with temperature / top-k / top-p and a seed.
        steps: passes (1: all codes at once; `media.length`: one code a pass).
        guidance: classifier-free guidance's scale; unless 1, each row is paired with the `unconditional`
            one holding the same codes, and codes are drawn from `guided` logits.
        reveal_noise: Gumbel noise on the confidences, scaled by the share of passes left (MaskGIT's
            annealed choice temperature: more varied early, greedy by confidence at the end; 0: none).

    Returns:
        (B, N) codes (0 ≤ code < media.count).
    """
    pairs = guidance != 1.0
    if pairs and unconditional is None:
        raise ValueError("guidance needs the unconditional row (the sequence without its prompt)")
    n, length = len(rows), media.length
    tail = [mask_id] * length + [media.end]
    ids, mask = left_pad([[*r, *tail] for r in [*rows, *([unconditional] * n if pairs else [])]], pad_id)
    ids, mask = ids.to(device), mask.to(device)
    first = ids.shape[1] - length - 1  # the codes' columns (rows are left-padded: all end together)
    codes = torch.zeros(n, length, dtype=torch.long, device=device)
    hidden = torch.ones(n, length, dtype=torch.bool, device=device)
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    for step in range(steps):
        canvas = torch.where(hidden, mask_id, codes + media.first)
        ids[:, first: first + length] = canvas.repeat(2, 1) if pairs else canvas
        logits = forward(ids, mask)[:, first: first + length, media.first: media.first + media.count].float()
        if pairs:
            conditional, free = logits.chunk(2)
            logits = guided(conditional, free, guidance)
        flat = logits.flatten(0, 1)  # (n · N, count)
        filtered = _filtered(flat, settings) if settings.sample else flat
        log_probs = filtered.log_softmax(-1)
        if settings.sample:
            drawn = torch.multinomial(log_probs.exp(), 1, generator=generator)[:, 0]
        else:
            drawn = flat.argmax(-1)
        confidence = log_probs.gather(1, drawn[:, None]).view(n, length)
        if reveal_noise > 0 and settings.sample:
            uniform = torch.rand(confidence.shape, generator=generator, device=device).clamp(1e-20, 1 - 1e-7)
            confidence = confidence - reveal_noise * (1 - (step + 1) / steps) * torch.log(-torch.log(uniform))
        confidence = confidence.masked_fill(~hidden, float("inf"))  # revealed codes stay
        keep_hidden = min(masked_after(step + 1, steps, length), int(hidden.sum(1).min()) - 1)
        rank = confidence.argsort(1).argsort(1)
        reveal = hidden & (rank >= max(keep_hidden, 0))
        codes = torch.where(reveal, drawn.view(n, length), codes)
        hidden = hidden & ~reveal
    return codes


def _filtered(logits: torch.Tensor, settings: GenerationSettings) -> torch.Tensor:
    """The logits `_sample` draws from: divided by the temperature, outside the top-k / top-p at -inf."""
    logits = logits / settings.temperature
    if settings.top_k:
        kth = logits.topk(min(settings.top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if settings.top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop a token when the tokens ranked above it already hold top_p; the best one always stays
        drop = probs.cumsum(-1) - probs >= settings.top_p
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return logits


def _sample(logits: torch.Tensor, settings: GenerationSettings, generator: torch.Generator) -> torch.Tensor:
    """One token per row from softmax(logits / T), keeping the top-k and then the top-p nucleus."""
    return torch.multinomial(_filtered(logits, settings).softmax(-1), 1, generator=generator)[:, 0]


def _cut(tokens: torch.Tensor, stop_ids: Sequence[int]) -> list[list[int]]:
    """(B, L) generated ids (-1 after a row ended) → lists cut before the first stop token."""
    rows = []
    for row in tokens.tolist():
        kept = []
        for token in row:
            if token < 0 or token in stop_ids:
                break
            kept.append(token)
        rows.append(kept)
    return rows


def _beam_search(start: Callable[..., Decoding], ids: torch.Tensor, mask: torch.Tensor | None,
                 settings: GenerationSettings) -> list[list[int]]:
    """The best finished hypothesis per prompt (see the module docstring for the rules)."""
    batch, beams, steps = ids.shape[0], settings.num_beams, settings.max_new_tokens
    device = ids.device
    session = start(beams, **settings.session_options())
    log_probs = session.prefill(ids.repeat_interleave(beams, 0),
                                None if mask is None else mask.repeat_interleave(beams, 0)).float().log_softmax(-1)
    vocab = log_probs.shape[-1]
    keep = max(2, 1 + len(settings.stop_ids)) * beams  # candidates per prompt, so K of them can run on
    stop = torch.tensor(settings.stop_ids, dtype=torch.long, device=device)
    rank_ok = torch.arange(keep, device=device) < beams  # only the top K candidates may finish
    offsets = torch.arange(batch, device=device)[:, None] * beams  # (B, 1) first row of each prompt

    running = torch.zeros(batch, beams, 0, dtype=torch.long, device=device)
    running_scores = torch.full((batch, beams), NEG, device=device)
    running_scores[:, 0] = 0.0  # every beam starts as the same prompt: count it once
    finished = torch.full((batch, beams, steps), -1, dtype=torch.long, device=device)
    finished_scores = torch.full((batch, beams), NEG, device=device)
    finished_real = torch.zeros(batch, beams, dtype=torch.bool, device=device)
    improvable = torch.ones(batch, dtype=torch.bool, device=device)
    with decoding_threads(settings, session, batch * beams, device):
        for t in range(steps):
            scores = (log_probs.view(batch, beams, vocab) + running_scores[:, :, None]).view(batch, -1)
            top_scores, top_index = scores.topk(keep, dim=-1)  # (B, 2K)
            parent, token = top_index // vocab, top_index % vocab
            candidates = torch.cat([running.gather(1, parent[:, :, None].expand(-1, -1, t)), token[:, :, None]], 2)
            ends = torch.isin(token, stop) | (t + 1 == steps)  # (B, 2K)

            # the K best candidates that go on
            go_on = (top_scores + ends.float() * NEG).topk(beams, dim=-1).indices  # (B, K)
            running = candidates.gather(1, go_on[:, :, None].expand(-1, -1, t + 1))
            running_scores = (top_scores + ends.float() * NEG).gather(1, go_on)
            parents = parent.gather(1, go_on)

            # finished hypotheses: top-K candidates that end, while the search can still improve
            normalised = top_scores / (t + 1) ** settings.length_penalty
            new = ends & rank_ok[None] & improvable[:, None]
            normalised = torch.where(new, normalised, normalised + NEG)
            padded = torch.full((batch, keep, steps), -1, dtype=torch.long, device=device)
            padded[:, :, : t + 1] = candidates
            pool_scores = torch.cat([finished_scores, normalised], 1)
            best = pool_scores.topk(beams, dim=-1).indices  # (B, K)
            finished = torch.cat([finished, padded], 1).gather(1, best[:, :, None].expand(-1, -1, steps))
            finished_scores = pool_scores.gather(1, best)
            finished_real = torch.cat([finished_real, new], 1).gather(1, best)

            # can a running beam still beat the worst finished one? (length t + 1 so far)
            best_running = running_scores[:, 0] / (t + 1) ** settings.length_penalty
            worst = torch.where(finished_real, finished_scores.min(dim=1, keepdim=True).values, NEG)  # (B, K)
            improvable = improvable & (best_running[:, None] > worst).any(dim=1)
            if not bool(improvable.any()) or bool(ends.all()) or t + 1 == steps:
                break
            session.reorder((parents + offsets).flatten())
            log_probs = session.step(running[:, :, -1].flatten()).float().log_softmax(-1)
    return _cut(finished[:, 0], settings.stop_ids)
