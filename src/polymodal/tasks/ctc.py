"""CTC transcription (docs/concepts.md#multi-task): a linear layer over the speech encoder's frames predicts a
character or a blank at each; the loss sums over every alignment of the transcript (connectionist temporal
classification, Graves et al. 2006). Beside an attention decoder (a `transcription` task on the same
encoder) it makes joint CTC + attention training (Kim, Hori and Watanabe 2017, ESPnet's `ctc_weight`);
with `attention_weight`, joint decoding: its n-best (as WeNet's attention rescoring) and the decoder's own
transcript are each scored by both models, as ESPnet weighs them."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..generation import GenerationSettings, generate, left_pad
from ..metrics import normalise_text, word_error_rate
from ..modalities.base import EncoderOutput
from ..models.output import ModelOutput
from ..models.parts import Decoder
from .base import Borrowed, Task, TaskData
from .ctc_search import greedy_decode, prefix_beam_search
from .generative import TextTargetData

BLANK = 0


class CTCData(TaskData):
    """Targets are the characters of a record's `text` (normalised: lower case, no punctuation, single
    spaces), as indices 1.. into `vocab` (0 is the blank); scored by word and character error rates and
    exact match.

    Args:
        vocab: the characters, learnt from the training transcripts (the blank is not among them).
        target_field: the record field to transcribe.
        inputs: modality → record field (default {audio: audio}).
        tokenizer: the decoder's tokenizer (the builder gives it), used to rescore with the decoder.
    """

    inputs = {"audio": "audio"}
    target_field = "text"

    def __init__(self, *, vocab: list[str], target_field: str | None = None, inputs: dict[str, str] | None = None,
                 tokenizer: Any = None):
        super().__init__(inputs=inputs)
        if target_field is not None:
            self.target_field = str(target_field)
        if not vocab or any(len(c) != 1 for c in vocab):
            raise ValueError(f"vocab: expected single characters, got {vocab!r}")
        self.vocab = list(vocab)
        self.index = {c: i + 1 for i, c in enumerate(self.vocab)}
        self.tokenizer = tokenizer
        # how the decoder reads a transcript, to rescore hypotheses (None: no tokenizer with start and end tokens)
        self.decoder_text: TextTargetData | None = None
        if tokenizer is not None and tokenizer.cls_id is not None and tokenizer.sep_id is not None:
            self.decoder_text = TextTargetData(tokenizer=tokenizer, max_length=512, target_field="text",
                                                inputs=self.inputs)

    @classmethod
    def vocab_from(cls, records: list[dict[str, Any]], options: dict[str, Any]) -> list[str]:
        field = options.get("target_field") or cls.target_field
        return sorted({c for r in records if field in r for c in normalise_text(str(r[field]))})

    def characters(self, text: str) -> list[int]:
        """The label indices of `text` (characters never seen in training are left out)."""
        return [self.index[c] for c in normalise_text(text) if c in self.index]

    def text(self, labels: list[int] | tuple[int, ...]) -> str:
        return "".join(self.vocab[i - 1] for i in labels if 0 < i <= len(self.vocab))

    def target(self, record: dict[str, Any]) -> list[int]:
        return self.characters(str(record[self.target_field]))

    def collate_targets(self, targets: list[list[int]]) -> dict[str, torch.Tensor]:
        """{"labels": (B, L) right-padded with 0, "lengths": (B,)}."""
        lengths = torch.tensor([len(t) for t in targets], dtype=torch.long)
        labels = torch.zeros(len(targets), max(1, int(lengths.max()) if len(targets) else 1), dtype=torch.long)
        for i, t in enumerate(targets):
            labels[i, : len(t)] = torch.as_tensor(t, dtype=torch.long)
        return {"labels": labels, "lengths": lengths}

    def decoder_targets(self, texts: list[str]) -> dict[str, Any]:
        """The decoder's teacher-forcing batch for `texts` (see `TextTargetData.collate_targets`)."""
        assert self.decoder_text is not None
        return self.decoder_text.collate_targets([self.decoder_text.target({"text": t}) for t in texts])

    def metrics(self, predictions: list[str], records: list[dict[str, Any]]) -> dict[str, float]:
        import jiwer

        references = [str(r[self.target_field]) for r in records]
        refs = [normalise_text(r) for r in references]
        hyps = [normalise_text(p) for p in predictions]
        return {"wer": word_error_rate(predictions, references), "cer": float(jiwer.cer(refs, hyps)),
                "exact_match": sum(h == r for h, r in zip(hyps, refs)) / len(refs)}


class CTCTask(Task):
    """A CTC head on one encoder's tokens: the loss over all alignments, decoded greedily or by prefix
    beam search, optionally rescored by the model's attention decoder.

    Args:
        data: its data side (a `CTCData`).
        width: the encoder tokens' width (the builder gives it).
        decoder: the backbone's text decoder, if any (the builder gives it); read only when
            `attention_weight` > 0.
        beam: prefixes kept by prefix beam search; 1 decodes greedily (the best path).
        prune: labels tried per frame by the beam search (the most probable).
        attention_weight: joint decoding: the beam's hypotheses and the decoder's own greedy transcript are
            scored by (1 - w) · CTC log-likelihood + w · the decoder's log-likelihood, the best wins (0: CTC
            alone). Needs a decoder trained on the same transcripts (a `transcription` task beside this one).
        dropout: on the encoder tokens before the linear layer.
        weight: multi-task loss weight (ESPnet's `ctc_weight`: 0.3 beside an attention decoder at 0.7).

    The loss is summed over each utterance's alignments, then averaged over the batch (ESPnet's
    reduction); an utterance whose frames are too few for its transcript contributes 0 (`zero_infinity`).
    """

    data_class = CTCData
    data: CTCData
    needs_fusion = False

    def __init__(self, data: CTCData, *, width: int, decoder: Decoder | None = None, beam: int = 8,
                 prune: int | None = 8, attention_weight: float = 0.0, dropout: float = 0.0, weight: float = 1.0):
        super().__init__(data, weight=weight)
        if beam < 1:
            raise ValueError(f"beam: expected at least 1, got {beam}")
        if not 0.0 <= attention_weight <= 1.0:
            raise ValueError(f"attention_weight: expected a weight in [0, 1], got {attention_weight}")
        if attention_weight > 0 and (decoder is None or data.decoder_text is None):
            raise ValueError("attention_weight > 0 rescores with the model's text decoder, and this model has "
                             "none: set model.decoder and train a `transcription` task beside this one")
        self.modality = next(iter(data.inputs))
        self.beam, self.prune, self.attention_weight = beam, prune, attention_weight
        self.decoder = Borrowed(decoder) if decoder is not None else None
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, len(data.vocab) + 1))

    def log_probs(self, out: ModelOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, C) per-frame log-probabilities of blank + characters, and (B,) valid frames."""
        encoded = out.modalities[self.modality]
        return self.head(encoded.tokens).float().log_softmax(-1), encoded.mask.sum(dim=1)

    def forward(self, out: ModelOutput, target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        log_probs, frames = self.log_probs(out)
        loss = F.ctc_loss(log_probs.transpose(0, 1), target["labels"], frames, target["lengths"], blank=BLANK,
                          reduction="sum", zero_infinity=True) / log_probs.shape[0]
        return {"loss": loss}

    def predict_output(self, out: ModelOutput) -> list[str]:
        log_probs, frames = self.log_probs(out)
        if self.beam == 1:
            return [self.data.text(greedy_decode(log_probs[i, : frames[i]])) for i in range(len(frames))]
        nbest = [prefix_beam_search(log_probs[i, : frames[i]], self.beam, BLANK, self.prune) for i in range(len(frames))]
        if self.attention_weight == 0:
            return [self.data.text(hyps[0][0]) for hyps in nbest]
        candidates = [list(dict.fromkeys(self.data.text(labels) for labels, _ in hyps)) for hyps in nbest]
        for texts, own in zip(candidates, self.decoder_guesses(out)):
            if own not in texts:
                texts.append(own)
        return self.rescore(out, log_probs, frames, candidates)

    @torch.no_grad()
    def decoder_guesses(self, out: ModelOutput) -> list[str]:
        """The decoder's own transcript of each example (greedy), to stand beside CTC's n-best."""
        assert self.decoder is not None and self.data.decoder_text is not None
        tokenizer, decoder = self.data.tokenizer, self.decoder.module
        prompt = [tokenizer.cls_id, *self.data.decoder_text.prompt_ids({})]
        ids, mask = left_pad([prompt] * out.modalities[self.modality].tokens.shape[0], tokenizer.pad_id)
        room = getattr(decoder, "max_length", len(prompt) + 64) - len(prompt)
        settings = GenerationSettings(max_new_tokens=max(1, room), stop_ids=(tokenizer.sep_id,))
        device = out.modalities[self.modality].tokens.device
        made = generate(lambda repeat, **options: decoder.start(out, repeat, **options), ids.to(device),
                        mask.to(device), settings)
        return [normalise_text(tokenizer.decode(t)) for t in made]

    @torch.no_grad()
    def rescore(self, out: ModelOutput, log_probs: torch.Tensor, frames: torch.Tensor,
                candidates: list[list[str]]) -> list[str]:
        """Joint decoding: each example's best candidate by (1 - w) · its CTC log-likelihood (every alignment,
        `F.ctc_loss`) + w · the decoder's log-likelihood of it (end token included)."""
        assert self.decoder is not None
        pairs = [(i, text) for i, texts in enumerate(candidates) for text in texts]
        rows = torch.tensor([i for i, _ in pairs], device=log_probs.device)
        labels = self.data.collate_targets([self.data.characters(text) for _, text in pairs])
        ctc = -F.ctc_loss(log_probs[rows].transpose(0, 1), labels["labels"].to(log_probs.device), frames[rows],
                          labels["lengths"].to(log_probs.device), blank=BLANK, reduction="none")
        batch = self.data.decoder_targets([text for _, text in pairs])
        device = out.modalities[self.modality].tokens.device
        ids, mask, loss_mask = batch["ids"].to(device), batch["mask"].to(device), batch["loss_mask"].to(device)
        logits = self.decoder.module.next_logits(_rows(out, rows), ids, mask).float().log_softmax(-1)  # (P, L, V)
        token_lp = logits[:, :-1].gather(2, ids[:, 1:, None].clamp(min=0))[..., 0] * loss_mask[:, 1:]  # media ids < 0
        w = self.attention_weight
        scores = ((1 - w) * ctc + w * token_lp.sum(dim=1)).tolist()
        best: dict[int, tuple[float, str]] = {}
        for (i, text), score in zip(pairs, scores):
            if i not in best or score > best[i][0]:
                best[i] = (score, text)
        return [best[i][1] for i in range(len(candidates))]


def _rows(out: ModelOutput, rows: torch.Tensor) -> ModelOutput:
    """`out` with its examples' memory and modality outputs taken at `rows` (repeats allowed)."""
    def pick(encoded: EncoderOutput | None) -> EncoderOutput | None:
        if encoded is None:
            return None
        return replace(encoded, tokens=encoded.tokens[rows], mask=encoded.mask[rows], pooled=encoded.pooled[rows],
                       present=None if encoded.present is None else encoded.present[rows])
    return replace(out, memory=pick(out.memory), modalities={m: pick(e) for m, e in out.modalities.items()})
