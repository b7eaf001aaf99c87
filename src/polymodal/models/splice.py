"""Media spans in a decoder's input sequence (LLaVA-style): a prompt's token ids hold one placeholder id
per media item, which becomes that example's projected modality tokens, behind the modality's marker.

Placeholder ids are negative, so they can never be a vocabulary id: modality m is `-(1 + MEDIA.index(m))`.
A decoder that reads media by cross-attention instead splices nothing: its placeholders simply vanish.
Every vector is put in place by one scatter (no loop over tokens, no wait on the data under
`torch.compile`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

MEDIA = ("audio", "image", "text", "video")  # modalities a prompt may place, in placeholder-id order


def media_id(modality: str) -> int:
    """The placeholder id of `modality` in prompt token ids."""
    return -(1 + MEDIA.index(modality))


def splice(ids: torch.Tensor, mask: torch.Tensor, embed: Callable[[torch.Tensor], torch.Tensor],
           spans: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None, *,
           left: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Input vectors for token ids whose placeholders become media spans.

    Args:
        ids: (B, L) token ids, placeholders negative; each modality placed at most once per row (a
            prompt template places it once).
        mask: (B, L) bool, True on real ids (placeholders included).
        embed: ids → (…, W) input embeddings.
        spans: modality → ((B, S, W) vectors, (B, S) bool mask): what each placeholder of that modality
            becomes (its real vectors only). None or a missing modality: the placeholder becomes nothing.
        left: pad the results on the left (prompts to generate from) instead of on the right.

    Returns:
        embeds: (B, T, W); mask: (B, T) bool; last: (B, L) long, for each id the index in T of the last
        vector it became (a vanished placeholder: the one before it), i.e. where the prediction of the
        next id is read. T is the longest row; under `torch.compile` it is L + Σ (S − 1), known when
        tracing (no data-dependent shape, no wait on the data), and the rows are padded to it.
    """
    spans = spans or {}
    vectors = embed(ids.clamp(min=0))  # (B, L, W); placeholder rows are replaced by their spans
    kept = mask & (ids >= 0)
    size = kept.long()  # (B, L) vectors each id becomes
    placed = {}
    for modality, (tokens, real) in spans.items():
        at = mask & (ids == media_id(modality))  # (B, L)
        placed[modality] = at
        size = size + at.long() * real.long().sum(1, keepdim=True)
    end = size.cumsum(1)  # (B, L) vectors up to and including each id's
    bound = ids.shape[1] + sum(tokens.shape[1] - 1 for tokens, _ in spans.values())
    shift = bound - end[:, -1:] if left else torch.zeros_like(end[:, -1:])  # (B, 1)
    start = end - size + shift  # (B, L) where each id's first vector goes
    sources, slots, keeps = [vectors], [torch.where(kept, start, bound)], [kept]  # dropped ones go to slot `bound`
    for modality, (tokens, real) in spans.items():
        at = placed[modality]
        present = at.any(1, keepdim=True)  # (B, 1)
        first = (start * at).sum(1, keepdim=True)  # (B, 1) the placeholder's slot (one per row)
        keep = real & present
        sources.append(tokens.to(vectors.dtype))
        slots.append(torch.where(keep, first + real.long().cumsum(1) - 1, bound))
        keeps.append(keep)
    source, slot, keep = torch.cat(sources, 1), torch.cat(slots, 1), torch.cat(keeps, 1)
    batch, width = source.shape[0], source.shape[-1]
    embeds = source.new_zeros(batch, bound + 1, width).scatter(1, slot[..., None].expand(-1, -1, width), source)
    out_mask = torch.zeros(batch, bound + 1, dtype=torch.bool, device=ids.device).scatter(1, slot, keep)
    embeds, out_mask, last = embeds[:, :bound], out_mask[:, :bound], (end - 1).clamp(min=0) + shift
    if torch.compiler.is_compiling():
        return embeds, out_mask, last
    total = int(end[:, -1].max()) if end.numel() else 0  # the longest row: eager results are trimmed to it
    if left:
        return embeds[:, bound - total:], out_mask[:, bound - total:], last - (bound - total)
    return embeds[:, :total], out_mask[:, :total], last
