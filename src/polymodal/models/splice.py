"""Media spans in a decoder's input sequence (LLaVA-style): a prompt's token ids hold one placeholder id
per media item, which becomes that example's projected modality tokens, behind the modality's marker.

Placeholder ids are negative, so they can never be a vocabulary id: modality m is `-(1 + MEDIA.index(m))`.
A decoder that reads media by cross-attention instead splices nothing: its placeholders simply vanish.
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
        ids: (B, L) token ids, placeholders negative.
        mask: (B, L) bool, True on real ids (placeholders included).
        embed: ids → (…, W) input embeddings.
        spans: modality → ((B, N, W) vectors, (B, N) bool mask): what each placeholder of that modality
            becomes (its real vectors only). None or a missing modality: the placeholder becomes nothing.
        left: pad the results on the left (prompts to generate from) instead of on the right.

    Returns:
        embeds: (B, T, W); mask: (B, T) bool; last: (B, L) long, for each id the index in T of the last
        vector it became (a vanished placeholder: the one before it), i.e. where the prediction of the
        next id is read.
    """
    batch, length = ids.shape
    vectors = embed(ids.clamp(min=0))  # (B, L, W); placeholder rows are replaced below
    if not spans and torch.compiler.is_compiling():  # no data-dependent shapes, no wait on the data
        return _compact_in_place(vectors, mask & (ids >= 0), left)
    if not bool((ids < 0).any()):
        return vectors, mask, torch.arange(length, device=ids.device).expand(batch, -1)
    if not spans:  # every placeholder vanishes (an encoder-decoder): what a training step runs, vectorised
        return _compact(vectors, mask & (ids >= 0), left)
    rows, lasts = [], []
    for b in range(batch):
        pieces, last, count = [], [], 0
        for t in range(length):  # (short prompts; placeholders are few)
            if not bool(mask[b, t]):
                last.append(max(count - 1, 0))
                continue
            token = int(ids[b, t])
            if token >= 0:
                pieces.append(vectors[b, t: t + 1])
                count += 1
            elif spans is not None and MEDIA[-token - 1] in spans:
                tokens, real = spans[MEDIA[-token - 1]]
                span = tokens[b][real[b]]  # (N_b, W)
                pieces.append(span)
                count += span.shape[0]
            last.append(max(count - 1, 0))
        rows.append(torch.cat(pieces) if pieces else vectors.new_zeros(0, vectors.shape[-1]))
        lasts.append(last)
    total = max(r.shape[0] for r in rows)
    embeds = vectors.new_zeros(batch, total, vectors.shape[-1])
    out_mask = torch.zeros(batch, total, dtype=torch.bool, device=ids.device)
    last = torch.tensor(lasts, dtype=torch.long, device=ids.device)  # (B, L)
    for b, row in enumerate(rows):
        start = total - row.shape[0] if left else 0
        embeds[b, start: start + row.shape[0]] = row
        out_mask[b, start: start + row.shape[0]] = True
        last[b] += start
    return embeds, out_mask, last


def _compact_in_place(vectors: torch.Tensor, keep: torch.Tensor,
                      left: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`_compact` at the input's length L (what `torch.compile` traces without a graph break): the same
    vectors, mask and read positions for every kept id, the rows padded to L rather than to the longest."""
    batch, length, width = vectors.shape
    count = keep.long().cumsum(1)  # (B, L) vectors kept up to and including each id
    shift = (length - count[:, -1:]) if left else torch.zeros_like(count[:, -1:])  # (B, 1)
    slot = torch.where(keep, count - 1 + shift, length)  # where each vector goes; dropped ones to slot L
    embeds = vectors.new_zeros(batch, length + 1, width).scatter(1, slot[..., None].expand(-1, -1, width), vectors)
    out_mask = torch.zeros(batch, length + 1, dtype=torch.bool, device=keep.device).scatter(1, slot, keep)
    return embeds[:, :length], out_mask[:, :length], (count - 1).clamp(min=0) + shift


def _compact(vectors: torch.Tensor, keep: torch.Tensor, left: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`splice` when nothing is inserted: the (B, L, W) vectors where `keep` (B, L) is True, moved together
    in order and padded on the right (or the left); the same three results."""
    count = keep.long().cumsum(1)  # (B, L) vectors kept up to and including each id
    total = int(count[:, -1].max()) if count.numel() else 0
    shift = (total - count[:, -1])[:, None] if left else torch.zeros_like(count[:, -1:])  # (B, 1)
    slot = count - 1 + shift  # where each kept vector goes
    rows, cols = keep.nonzero(as_tuple=True)
    embeds = vectors.new_zeros(vectors.shape[0], total, vectors.shape[-1])
    embeds[rows, slot[rows, cols]] = vectors[rows, cols]
    out_mask = torch.zeros(vectors.shape[0], total, dtype=torch.bool, device=keep.device)
    out_mask[rows, slot[rows, cols]] = True
    return embeds, out_mask, (count - 1).clamp(min=0) + shift
