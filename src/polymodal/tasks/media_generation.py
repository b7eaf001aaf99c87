"""Generating media from text (docs/concepts.md#tokenizers): a decoder-only language model writes a trained
tokenizer's codes after a text prompt, `[start] prompt [begin] codes [end]` (the prompt padded to a fixed
length, so each code has its own position), trained by next-token
prediction on the codes and the markers (Chameleon, Emu3, LlamaGen, Janus), and sampled with
classifier-free guidance: the prompt is dropped for `cfg_dropout` of the training examples, so the same
model also predicts codes unconditionally, and at sampling `uncond + s·(cond − uncond)` with s = `guidance`.

Sampling is constrained: inside the span only the modality's codes, exactly its tokenizer's grid of them,
then the end marker. With `decoding: parallel` the model is a masked-token one instead (MaskGIT): it reads
the sequence both ways, learns to restore a cosine-drawn share of hidden codes, and draws all the codes in
`steps` passes, keeping the surest each time (`generation.generate_codes_parallel`). On the built-in shapes (`polymodal synth --generation`) the drawings are scored
GenEval's way by the exact shapes detector, beside what no model should be judged without: the same with
guidance off, random codes, the nearest training image to the prompt (retrieval), and the tokenizer's own
ceiling (decoded real images). Sounds (`text_to_audio`, on `polymodal synth --generation`'s sounds) are
judged the same way by a classifier trained on real sounds (`data/sound_judge.py`): voice, pitch and the
number of beeps. Clips (`text_to_video`, on the prompted clips) by the shapes detector on every frame: the
asked object in each, moving the asked way (`data/video_generation.py`).
"""

from __future__ import annotations

import re
import string
from dataclasses import replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..data.media import read_audio
from ..data.shapes_detector import detect, geneval_score, satisfies
from ..data.media import decode_video
from ..data.sound_generation import SAMPLE_RATE
from ..data.sound_judge import sound_scores, trained_judge
from ..data.video_generation import judge_clip, video_scores
from ..generation import GenerationSettings, generate_codes, generate_codes_parallel, training_mask
from ..models.multimodal_lm import BOTH_WAYS, MediaVocabulary, MultimodalLM
from ..models.output import ModelOutput
from .base import Borrowed, Task, TaskData

VARIANTS = ("unguided", "random", "ceiling")  # what evaluation draws besides the guided samples
DRAWN = {"image": "images", "audio": "sounds", "video": "clips"}  # a prediction's key for the guided samples
DECODINGS = ("autoregressive", "parallel")


class MediaTargetData(TaskData):
    """Records with a text prompt and the media to draw from it: the target is the media's codes (the
    tokenizer encodes the record's media in the model's pass), after the prompt.

    Args:
        tokenizer: the decoder's text tokenizer (its start token opens each sequence).
        prompt: the prompt template: record fields in braces, e.g. "{text}" (the default) or
            "draw {text}"; no media placeholders.
        max_prompt_length: the most prompt tokens.
        inputs: {modality: FIELD}: the one media field to draw (default {image: image}).
        vocab: the training prompts and their media (`vocab_from`), for the retrieval baseline.
    """

    inputs = {"image": "image"}
    default_prompt = "{text}"

    def __init__(self, *, tokenizer: Any, prompt: str | None = None, max_prompt_length: int = 16,
                 inputs: dict[str, str] | None = None, vocab: list[str] | None = None):
        super().__init__(inputs=inputs)
        if len(self.inputs) != 1:
            raise ValueError(f"inputs: a generation task draws one media field, got {sorted(self.inputs)}")
        if tokenizer.cls_id is None:
            raise ValueError("the decoder's tokenizer needs a start token ([CLS], <s>, ...)")
        self.modality = next(iter(self.inputs))
        if self.modality not in DRAWN:
            raise ValueError(f"inputs: a generation task draws {' or '.join(DRAWN)}, got {self.modality!r}")
        self.tokenizer, self.max_prompt_length = tokenizer, int(max_prompt_length)
        self.prompt = self.default_prompt if prompt is None else str(prompt)
        if re.search(r"<[a-z]+>", self.prompt):
            raise ValueError(f"prompt: {self.prompt!r} places media; a generation prompt is text with record "
                             "fields in braces, e.g. '{text}'")
        try:
            self.prompt_fields = tuple(dict.fromkeys(f for _, f, _, _ in string.Formatter().parse(self.prompt) if f))
        except ValueError as error:
            raise ValueError(f"prompt: {error} in {self.prompt!r}") from None
        self.media: MediaVocabulary | None = None  # the head sets it (the decoder's ids for this modality)
        self.retrieval = [tuple(item.split("\t", 1)) for item in vocab or []]  # (prompt text, media path)

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*super().fields, *self.prompt_fields]))

    @classmethod
    def vocab_from(cls, records: list[dict[str, Any]], options: dict[str, Any]) -> list[str]:
        """Each distinct training prompt with its first record's media path ("prompt<TAB>path")."""
        template = options.get("prompt") or cls.default_prompt
        field = next(iter((options.get("inputs") or cls.inputs).values()))
        seen: dict[str, str] = {}
        for record in records:
            if field in record and all(f in record for f in _fields(template)):
                seen.setdefault(template.format_map(record), str(record[field]))
        return [f"{text}\t{path}" for text, path in seen.items()]

    def prompt_text(self, record: dict[str, Any]) -> str:
        return self.prompt.format_map({k: str(v) for k, v in record.items()})

    def prompt_ids(self, text: str) -> list[int]:
        """The prompt's ids (without the start token)."""
        return self.tokenizer.ids(text)[: self.max_prompt_length]

    def target(self, record: dict[str, Any]) -> dict[str, list[int]]:
        return {"prompt": self.prompt_ids(self.prompt_text(record))}

    def row(self, prompt: list[int]) -> list[int]:
        """`[start] prompt [pad]… [begin]`: what generation continues. The prompt fills `max_prompt_length`
        places, the rest of them pad tokens the model sees, so every code sits at the same position
        whatever the prompt's length (LlamaGen's fixed-length condition); no prompt at all (all pads) is
        the unconditional row."""
        pads = [self.tokenizer.pad_id] * (self.max_prompt_length - len(prompt))
        return [self.tokenizer.cls_id, *prompt, *pads, self.media.begin]

    def collate_targets(self, targets: list[dict[str, list[int]]]) -> dict[str, Any]:
        """{"ids": (B, L) `[start] prompt [pad]… [begin] codes [end]` (`row`), the codes' slots still
        holding `first` (the model's pass fills them), "mask", "loss_mask" (the begin marker, codes and end
        marker: what is generated), "slots" (the codes' positions), "prompt_mask" (the prompt's: what
        classifier-free guidance's dropout turns to pads), "prompt": the prompts' id lists}."""
        media = self.media
        rows = [[*self.row(t["prompt"]), *[media.first] * media.length, media.end] for t in targets]
        length = max(len(r) for r in rows)
        shape = (len(rows), length)
        ids = torch.full(shape, self.tokenizer.pad_id, dtype=torch.long)
        mask, loss_mask = torch.zeros(shape, dtype=torch.bool), torch.zeros(shape, dtype=torch.bool)
        slots, prompt_mask = torch.zeros(shape, dtype=torch.bool), torch.zeros(shape, dtype=torch.bool)
        for i, (row, t) in enumerate(zip(rows, targets)):
            n = len(row)
            ids[i, :n] = torch.as_tensor(row, dtype=torch.long)
            mask[i, :n] = True
            loss_mask[i, n - media.length - 2: n] = True
            slots[i, n - media.length - 1: n - 1] = True
            prompt_mask[i, 1: 1 + len(t["prompt"])] = True
        return {"ids": ids, "mask": mask, "loss_mask": loss_mask, "slots": slots, "prompt_mask": prompt_mask,
                "prompt": [t["prompt"] for t in targets]}

    @property
    def drawn(self) -> str:
        """The prediction key of the guided samples: "images" or "sounds"."""
        return DRAWN[self.modality]

    def metrics(self, predictions: list[dict[str, Any]], records: list[dict[str, Any]]) -> dict[str, float]:
        """On records with a `spec` (the built-in benchmark's), scores for the guided samples and for each
        baseline present: guidance off, random codes, the tokenizer's ceiling and retrieval (the training
        media whose prompt shares the most words with the prompt). Images: the share of drawings the shapes
        detector passes, per category and overall (GenEval's mean over categories). Sounds: the share
        whose voice, pitch and count the sound judge hears as asked, each and all three."""
        if not predictions or not all("spec" in r for r in records):
            return {}
        score = {"audio": self._sound_scores, "video": self._clip_scores}.get(self.modality, self._drawing_scores)
        results: dict[str, float] = {}
        for key in (self.drawn, *VARIANTS):
            if key in predictions[0]:
                specs = [(r, item) for p, r in zip(predictions, records) for item in p[key]]
                results.update(score(specs, "" if key == self.drawn else f"_{key}"))
        if self.retrieval:
            nearest = [self.nearest(self.prompt_text(r)) for r in records]
            results.update(score([(r, self.read_media(path)) for r, path in zip(records, nearest)], "_retrieval"))
        return results

    def read_media(self, path: str) -> Any:
        """A training media file as the scores read it: an RGB image, a waveform at the judge's rate, a
        clip's frames."""
        if self.modality == "audio":
            return read_audio(path, sample_rate=SAMPLE_RATE)[0]
        if self.modality == "video":
            return decode_video(path)[0]
        return Image.open(path).convert("RGB")

    @staticmethod
    def _drawing_scores(items: list[tuple[dict[str, Any], Any]], suffix: str) -> dict[str, float]:
        """GenEval's score ("geneval" + suffix) of (record, image) pairs, with its categories when guided."""
        categories = [r["category"] for r, _ in items]
        passed = [satisfies(r["spec"], detect(np.asarray(image))) for r, image in items]
        scores = geneval_score(categories, passed)
        out = {f"geneval{suffix}": scores.pop("overall")}
        if not suffix:
            out.update({f"geneval/{c}": v for c, v in scores.items()})
        return out

    @staticmethod
    def _clip_scores(items: list[tuple[dict[str, Any], Any]], suffix: str) -> dict[str, float]:
        """The share of (record, frames) pairs the clip judge passes in object and direction ("judge" +
        suffix), and in each when guided."""
        verdicts = [judge_clip(r["spec"], np.asarray(frames)) for r, frames in items]
        return _judged(video_scores([r["spec"] for r, _ in items], verdicts), suffix)

    @staticmethod
    def _sound_scores(items: list[tuple[dict[str, Any], Any]], suffix: str) -> dict[str, float]:
        """The judge's share of (record, waveform) pairs right in all three ("judge" + suffix), and in each
        of voice, pitch and count when guided."""
        waves = [np.asarray(wave, dtype=np.float32) for _, wave in items]
        length = max(len(w) for w in waves)
        heard = trained_judge().judge(np.stack([np.pad(w, (0, length - len(w))) for w in waves]))
        return _judged(sound_scores([r["spec"] for r, _ in items], heard), suffix)

    def nearest(self, text: str) -> str:
        """The media path of the training prompt sharing the most words with `text` (ties: the first)."""
        words = set(text.lower().split())
        best = max(range(len(self.retrieval)), key=lambda i: _overlap(words, self.retrieval[i][0]))
        return self.retrieval[best][1]


def _judged(scores: dict[str, float], suffix: str) -> dict[str, float]:
    """A judge's scores as metrics: all of them right as "judge" + suffix, and each ("judge/NAME") when
    guided (no suffix)."""
    out = {f"judge{suffix}": scores["all"]}
    if not suffix:
        out.update({f"judge/{name}": v for name, v in scores.items() if name != "all"})
    return out


def _fields(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


def _overlap(words: set[str], text: str) -> float:
    """Cosine similarity of two bags of distinct words."""
    other = set(text.lower().split())
    return len(words & other) / max(1.0, (len(words) * len(other)) ** 0.5)


class MediaGenerationTask(Task):
    """Text → media through a trained tokenizer's codes (see the module docstring).

    Args:
        data: its data side (`MediaTargetData`).
        decoder: the backbone's decoder: a decoder-only model that writes this modality's codes (its
            encoder is a trained tokenizer, `model.encoders.<m>: {type: tokenizer, path: RUN}`).
        encoder: the trained tokenizer (its pixel decoder turns codes back into media).
        cfg_dropout: the share of training examples whose prompt is dropped (classifier-free guidance).
        guidance: s at sampling; 1.0 samples the prompt's distribution itself (one row per sample).
        samples: drawings per prompt at evaluation (GenEval draws 4).
        temperature, top_k, top_p: the sampling filters (`GenerationSettings`).
        cache, compiled: the KV cache at sampling (`GenerationSettings`).
        decoding: "autoregressive" (next-token prediction, one code at a time) or "parallel" (masked codes
            restored, all drawn in `steps` passes; Polymodal's own decoder only).
        steps: parallel decoding's passes (default 8, or the grid's codes if fewer).
        baselines: evaluation also draws with guidance off, random codes and decodes the real media's codes.
        seed: the sampling generator's seed.
        weight: multi-task loss weight.
    """

    data_class = MediaTargetData
    data: MediaTargetData
    needs = ("decoder",)
    needs_fusion = False

    def __init__(self, data: MediaTargetData, *, decoder: nn.Module, encoder: nn.Module, cfg_dropout: float = 0.1,
                 guidance: float = 3.0, samples: int = 4, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, cache: str = "dynamic", compiled: bool = False, baselines: bool = True,
                 decoding: str = "autoregressive", steps: int | None = None, seed: int = 0, weight: float = 1.0):
        super().__init__(data, weight=weight)
        modality = data.modality
        if not isinstance(decoder, MultimodalLM) or modality not in decoder.media:
            raise ValueError(f"drawing {modality} needs a decoder-only model.decoder and a trained {modality} "
                             f"tokenizer as its encoder: model.encoders.{modality}: {{type: tokenizer, path: RUN}}")
        if not 0 <= cfg_dropout < 1:
            raise ValueError(f"cfg_dropout: expected a share in [0, 1), got {cfg_dropout}")
        if guidance != 1.0 and cfg_dropout == 0:
            raise ValueError(f"guidance: {guidance} needs an unconditional model: train with cfg_dropout > 0 "
                             "(0.1 is usual), or sample with guidance: 1.0")
        if samples < 1:
            raise ValueError(f"samples: expected at least 1, got {samples}")
        if decoding not in DECODINGS:
            raise ValueError(f"decoding: expected one of {', '.join(DECODINGS)}, got {decoding!r}")
        length = decoder.media[modality].length
        steps = min(8, length) if steps is None else steps
        if decoding == "parallel":
            if not decoder.attends_both_ways:
                raise ValueError(f"decoding: parallel needs {BOTH_WAYS}: use decoding: autoregressive")
            if getattr(data.tokenizer, "mask_id", None) is None:
                raise ValueError("decoding: parallel hides codes behind the text tokenizer's mask token, and this "
                                 "tokenizer has none ([MASK] / <mask>)")
            if not 1 <= steps <= length:
                raise ValueError(f"steps: expected 1 to {length} (the codes of one item), got {steps}")
            if cache != "dynamic" or compiled:  # each pass reads the whole sequence again: no cache to keep
                raise ValueError("cache and compiled set how autoregressive decoding keeps its KV cache; parallel "
                                 "decoding reads the whole sequence at each pass and has none: leave them unset")
        self.decoder, self.encoder = Borrowed(decoder), Borrowed(encoder)
        data.media = decoder.media[modality]
        longest = 1 + data.max_prompt_length + data.media.length + 2
        if longest > decoder.max_length:
            raise ValueError(f"its sequences take up to {longest} positions (start, prompt up to max_prompt_length="
                             f"{data.max_prompt_length}, begin, {data.media.length} codes, end) but the decoder has "
                             f"{decoder.max_length}: raise model.decoder.max_length")
        self.cfg_dropout, self.guidance, self.samples, self.baselines, self.seed = (
            float(cfg_dropout), float(guidance), int(samples), bool(baselines), int(seed))
        self.decoding, self.steps = decoding, int(steps)
        self.settings = GenerationSettings(max_new_tokens=data.media.length, sample=True, temperature=temperature,
                                           top_k=top_k, top_p=top_p, seed=seed, cache=cache, compiled=compiled)

    def forward(self, out: ModelOutput, target: dict[str, Any]) -> dict[str, torch.Tensor]:
        media, lm = self.data.media, self.decoder.module
        codes = out.modalities[self.data.modality].codes  # (B, N)
        ids = target["ids"].masked_scatter(target["slots"], (codes + media.first).flatten())
        mask = target["mask"]
        if self.training and self.cfg_dropout > 0:  # a dropped prompt becomes pads: the unconditional row
            drop = torch.rand(ids.shape[0], 1, device=ids.device) < self.cfg_dropout
            ids = ids.masked_fill(drop & target["prompt_mask"], self.data.tokenizer.pad_id)
        text_only = replace(out, modalities={k: v for k, v in out.modalities.items() if k != self.data.modality})
        if self.decoding == "parallel":  # MaskGIT: hide a cosine-drawn share of the codes, predict them
            slots = target["slots"]
            hide = slots.clone()
            hide[slots] = training_mask(torch.rand(ids.shape[0], device=ids.device),
                                        torch.rand(ids.shape[0], media.length, device=ids.device)).flatten()
            logits = lm.position_logits(text_only, ids.masked_fill(hide, self.data.tokenizer.mask_id), mask)
            codes_logits = logits[hide][:, media.first: media.first + media.count]  # (hidden, count)
            return {"loss": F.cross_entropy(codes_logits.float(), ids[hide] - media.first)}
        logits = lm.next_logits(text_only, ids, mask)  # (B, L, V)
        labels = ids[:, 1:].masked_fill(~target["loss_mask"][:, 1:], -100)
        return {"loss": F.cross_entropy(logits[:, :-1].float().flatten(0, 1), labels.flatten(), ignore_index=-100)}

    @torch.no_grad()
    def draw(self, prompts: list[list[int]], *, samples: int = 1, guidance: float | None = None,
             seed: int | None = None, settings: GenerationSettings | None = None,
             steps: int | None = None) -> torch.Tensor:
        """(B · samples, N) codes drawn for prompt ids (each prompt's samples together); `steps`: parallel
        decoding's passes (default the task's)."""
        lm, data = self.decoder.module, self.data
        settings = settings or self.settings
        if seed is not None:
            settings = replace(settings, seed=seed)
        rows = [data.row(p) for p in prompts for _ in range(samples)]
        empty = ModelOutput(modalities={}, pooled=None)
        device = next(lm.parameters()).device
        guidance = self.guidance if guidance is None else guidance
        if self.decoding == "parallel":
            return generate_codes_parallel(
                lambda ids, mask: lm.position_logits(empty, ids, mask), rows, data.tokenizer.pad_id,
                data.tokenizer.mask_id, data.media, settings, steps=self.steps if steps is None else steps,
                device=device, guidance=guidance, unconditional=data.row([]))
        return generate_codes(lambda repeat, **options: lm.start(empty, repeat, **options), rows,
                              data.tokenizer.pad_id, data.media, settings, device=device,
                              guidance=guidance, unconditional=data.row([]))

    def to_media(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, N) codes → media on the CPU, through the tokenizer's decoder: (B, S, S, 3) uint8 images,
        (B, samples) float waveforms, or (B, T, S, S, 3) uint8 clips."""
        decoded = self.encoder.module.decode_codes(codes)  # (B, 3, S, S) / (B, T, 3, S, S) in [0, 1], (B, samples)
        if self.data.modality == "audio":
            return decoded.float().cpu()
        return (decoded.movedim(-3, -1) * 255).round().to(torch.uint8).cpu()

    def predict_batch(self, model: nn.Module, inputs: dict[str, dict[str, torch.Tensor]],
                      target: dict[str, Any]) -> list[dict[str, Any]]:
        """Per prompt: `samples` guided drawings ("images", (n, S, S, 3) uint8; "sounds", (n, samples)) and,
        with `baselines`, as many with guidance off ("unguided") and from random codes ("random"), and the
        real media through the tokenizer ("ceiling", one)."""
        prompts, n, media = target["prompt"], self.samples, self.data.media
        views = {self.data.drawn: self.to_media(self.draw(prompts, samples=n))}
        if self.baselines:
            views["unguided"] = self.to_media(self.draw(prompts, samples=n, guidance=1.0))
            generator = torch.Generator().manual_seed(self.seed)
            random = torch.randint(0, media.count, (len(prompts) * n, media.length), generator=generator)
            views["random"] = self.to_media(random.to(next(self.decoder.module.parameters()).device))
            real = model.encode(inputs, fuse=False).modalities[self.data.modality].codes
            views["ceiling"] = self.to_media(real)
        return [{key: items.view(len(prompts), -1, *items.shape[1:])[i] for key, items in views.items()}
                for i in range(len(prompts))]

    def predict(self, model: nn.Module, inputs: dict[str, dict[str, torch.Tensor]]) -> list[Any]:
        kind, suffix = {"audio": ("audio", "wav"), "video": ("video", "mp4")}.get(self.data.modality, ("image", "png"))
        raise ValueError(f"a generation task draws from prompts: use load(RUN).generate_{kind}(prompt) or "
                         f"polymodal predict RUN --prompt TEXT --save out.{suffix}")


class SoundTargetData(MediaTargetData):
    """`MediaTargetData` for sounds: records with a text prompt and the sound to make from it ({audio: audio})."""

    inputs = {"audio": "audio"}


class TextToAudioTask(MediaGenerationTask):
    """Text → sound through a trained sound tokenizer's codes (`model.encoders.audio: {type: tokenizer,
    path: RUN}`); as `MediaGenerationTask`, judged by the sound judge."""

    data_class = SoundTargetData
    data: SoundTargetData


class ClipTargetData(MediaTargetData):
    """`MediaTargetData` for clips: records with a text prompt and the clip to make from it ({video: video})."""

    inputs = {"video": "video"}


class TextToVideoTask(MediaGenerationTask):
    """Text → clip through a trained video tokenizer's codes (per-frame image codes, `model.encoders.video:
    {type: tokenizer, path: RUN}`); as `MediaGenerationTask`, judged by the shapes detector on every frame."""

    data_class = ClipTargetData
    data: ClipTargetData
