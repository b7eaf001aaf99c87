"""Decoding CTC outputs (Graves et al. 2006): greedy (best path) and prefix beam search (Hannun et al.
2014), over one utterance's (T, C) log-probabilities with the blank at index 0."""

from __future__ import annotations

import math
from collections import defaultdict

import torch

NEG_INF = float("-inf")


def _logaddexp(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    top = max(a, b)
    return top + math.log1p(math.exp(-abs(a - b)))


def greedy_decode(log_probs: torch.Tensor, blank: int = 0) -> list[int]:
    """(T, C) → the best path's labels with repeats merged, then blanks removed."""
    best = log_probs.argmax(dim=-1).tolist()
    out, previous = [], None
    for label in best:
        if label != previous and label != blank:
            out.append(label)
        previous = label
    return out


def prefix_beam_search(log_probs: torch.Tensor, beam: int = 8, blank: int = 0,
                       prune: int | None = None) -> list[tuple[tuple[int, ...], float]]:
    """The `beam` most probable label sequences of (T, C) log-probabilities, each with its log-probability
    summed over every alignment the beam kept (exact when the beam holds every prefix), best first.

    Each prefix carries two scores: ending in a blank and ending in its last label. A label equal to the
    prefix's last one extends it only after a blank; without one it merges into the same prefix.

    Args:
        log_probs: (T, C) per-frame log-probabilities (log-softmax over C labels).
        beam: prefixes kept after each frame.
        blank: the blank's index.
        prune: labels tried per frame (the most probable ones; None: every label).
    """
    frames, labels = log_probs.shape
    rows = log_probs.detach().float().cpu()
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, NEG_INF)}  # prefix → (blank, non-blank)
    for t in range(frames):
        row = rows[t].tolist()
        tried = range(labels) if prune is None or prune >= labels else rows[t].topk(prune).indices.tolist()
        following: dict[tuple[int, ...], list[float]] = defaultdict(lambda: [NEG_INF, NEG_INF])
        for prefix, (p_blank, p_label) in beams.items():
            total = _logaddexp(p_blank, p_label)
            stay = following[prefix]
            stay[0] = _logaddexp(stay[0], total + row[blank])
            for label in tried:
                if label == blank:
                    continue
                if prefix and label == prefix[-1]:
                    stay[1] = _logaddexp(stay[1], p_label + row[label])  # the same label held on
                    grown = p_blank + row[label]  # a new label only after a blank
                else:
                    grown = total + row[label]
                if grown > NEG_INF:
                    extended = following[prefix + (label,)]
                    extended[1] = _logaddexp(extended[1], grown)
        alive = [item for item in following.items() if _logaddexp(*item[1]) > NEG_INF]
        ranked = sorted(alive, key=lambda item: _logaddexp(*item[1]), reverse=True)[:beam]
        beams = {prefix: (scores[0], scores[1]) for prefix, scores in ranked}
    return [(prefix, _logaddexp(*scores)) for prefix, scores in
            sorted(beams.items(), key=lambda item: _logaddexp(*item[1]), reverse=True)]
