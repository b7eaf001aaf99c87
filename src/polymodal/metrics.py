"""Standard metrics: accuracy (overall and per group), retrieval recall@k in both directions, image
reconstruction (PSNR, SSIM, codebook usage), and the generation metrics (BLEU-4, CIDEr, exact match, word error rate)."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from typing import Hashable, Sequence

import torch
import torch.nn.functional as F


def grouped_accuracy(predictions: Sequence[str], targets: Sequence[str],
                     groups: Sequence[Hashable | None]) -> dict[str, float]:
    """Exact-match accuracy overall (`accuracy`) and per group (`accuracy/<group>`), groups sorted.

    Args:
        predictions: predicted strings.
        targets: reference strings, same length.
        groups: a group per example (e.g. question type), or None to leave it out of the breakdown.
    """
    if len(predictions) != len(targets) or len(targets) != len(groups):
        raise ValueError("predictions, targets and groups must have the same length")
    if not targets:
        return {"accuracy": float("nan")}
    hits = [p == t for p, t in zip(predictions, targets)]
    per_group: dict[Hashable, list[bool]] = defaultdict(list)
    for hit, group in zip(hits, groups):
        if group is not None:
            per_group[group].append(hit)
    result = {"accuracy": sum(hits) / len(hits)}
    for group in sorted(per_group, key=str):
        result[f"accuracy/{group}"] = sum(per_group[group]) / len(per_group[group])
    return result


def _recall(similarity: torch.Tensor, query_keys: list[int], gallery_keys: torch.Tensor, k: int) -> float:
    """Fraction of queries (rows) whose top-k gallery items (columns) hold an item with the same key."""
    top = similarity.topk(min(k, similarity.shape[1]), dim=1).indices  # (Q, k)
    gallery_keys = gallery_keys.to(similarity.device)
    hit = (gallery_keys[top] == torch.tensor(query_keys, device=similarity.device)[:, None]).any(dim=1)
    return hit.float().mean().item()


def retrieval_recall(image: torch.Tensor, text: torch.Tensor, captions: Sequence[str],
                     ks: Sequence[int] = (1, 5, 10), names: tuple[str, str] = ("image", "text")) -> dict[str, float]:
    """Recall@k for text→image and image→text retrieval over paired embeddings.

    A hit counts when a retrieved item's caption equals the query's: synthetic captions repeat, so
    identical scenes are equally correct answers.

    Args:
        image: (N, E) normalised image embeddings; row i pairs with text row i.
        text: (N, E) normalised text embeddings.
        captions: the N captions, defining which items are equivalent.
        names: what the two sides are called in the metric names (e.g. ("video", "text")).

    Returns:
        {"text_to_image/R@k": ..., "image_to_text/R@k": ..., "mean_recall": ...}
    """
    ids: dict[str, int] = {}
    keys = [ids.setdefault(c, len(ids)) for c in captions]
    key_tensor = torch.tensor(keys)
    similarity = text @ image.T  # (N text queries, N images)
    result = {}
    for k in ks:
        result[f"{names[1]}_to_{names[0]}/R@{k}"] = _recall(similarity, keys, key_tensor, k)
    for k in ks:
        result[f"{names[0]}_to_{names[1]}/R@{k}"] = _recall(similarity.T, keys, key_tensor, k)
    result["mean_recall"] = sum(result.values()) / len(result)
    return result


def normalise_text(text: str) -> str:
    """Lower-case, punctuation to spaces, whitespace collapsed: how generated text is compared and
    tokenised for BLEU and CIDEr (instead of the Java PTB tokenizer of the COCO toolkit; on plain
    lower-case English the two split words alike)."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def caption_scores(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Corpus BLEU-4 and CIDEr-D (`pycocoevalcap`'s scorers) and exact match, over normalised text.

    Args:
        hypotheses: one generated text per example.
        references: each example's reference texts (one or more).

    Returns:
        {"bleu4": ..., "cider": ..., "exact_match": fraction equal to one of their references}.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} reference sets")
    if not hypotheses:
        return {"bleu4": float("nan"), "cider": float("nan"), "exact_match": float("nan")}
    hyps = {str(i): [normalise_text(h)] for i, h in enumerate(hypotheses)}
    refs = {str(i): [normalise_text(r) for r in rs] for i, rs in enumerate(references)}
    if any(not rs for rs in refs.values()):
        raise ValueError("every example needs at least one reference text")
    bleu, _ = Bleu(4).compute_score(refs, hyps, verbose=0)
    cider, _ = Cider().compute_score(refs, hyps)
    exact = sum(hyps[k][0] in refs[k] for k in hyps) / len(hyps)
    return {"bleu4": float(bleu[3]), "cider": float(cider), "exact_match": exact}


def word_error_rate(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus word error rate (`jiwer`): (substitutions + deletions + insertions) / reference words,
    over normalised text."""
    import jiwer

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    refs = [normalise_text(r) for r in references]
    if not any(refs):
        raise ValueError("word error rate needs reference words")
    return float(jiwer.wer(refs, [normalise_text(h) for h in hypotheses]))


def psnr(prediction: torch.Tensor, target: torch.Tensor, peak: float = 1.0) -> torch.Tensor:
    """(B,) peak signal-to-noise ratio in dB of images in [0, peak]: 10·log10(peak² / MSE) per image."""
    mse = F.mse_loss(prediction.float(), target.float(), reduction="none").flatten(1).mean(1)
    return 10 * torch.log10(peak**2 / mse.clamp(min=1e-10))


def ssim(prediction: torch.Tensor, target: torch.Tensor, peak: float = 1.0, window: int = 11,
         sigma: float = 1.5) -> torch.Tensor:
    """(B,) structural similarity (Wang et al. 2004) of images (B, C, H, W) in [0, peak]: local means,
    variances and covariance under a Gaussian window (11 × 11, σ 1.5, no padding), C1 = (0.01·peak)², C2 =
    (0.03·peak)², averaged over pixels and channels."""
    x, y = prediction.double(), target.double()  # variances as differences of means: float64 keeps them
    channels = x.shape[1]
    size = min(window, x.shape[-1], x.shape[-2])
    offsets = torch.arange(size, dtype=torch.float64, device=x.device) - (size - 1) / 2
    g = torch.exp(-offsets**2 / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(channels, 1, size, size)
    blur = lambda t: F.conv2d(t, kernel, groups=channels)  # noqa: E731
    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    value = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return value.flatten(1).mean(1).float()


def code_usage(codes: list[torch.Tensor], num_codes: int) -> dict[str, float]:
    """`codebook_usage`: the share of the `num_codes` codes that occur in `codes`; `perplexity`: exp of the
    entropy of their frequencies (num_codes when all are equally frequent, 1 when one code is all)."""
    counts = torch.bincount(torch.cat([c.flatten() for c in codes]).long(), minlength=num_codes).float()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {"codebook_usage": float((counts > 0).sum()) / num_codes, "perplexity": float(math.exp(entropy))}
