"""Tasks whose answer is generated text (docs/concepts.md#multi-task, #pre-training generative pre-training): a
decoder reads the
model's memory and is trained with teacher forcing; predictions are decoded by `polymodal.generation`.

Captioning, generative VQA and transcription are this with their own inputs, target field and metrics.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..generation import GenerationSettings, generate, left_pad
from ..models.output import ModelOutput
from ..models.splice import MEDIA, media_id
from ..models.parts import Decoder
from .base import Borrowed, Task, TaskData


class TextTargetData(TaskData):
    """Targets are a prompt and the token ids of a record's text field: `[start] prompt answer [end]`, the
    loss on the answer and the end token only. A batch of them is ragged, padded on the right.

    The prompt comes from a template: text with record fields in braces and media placeholders, e.g.
    `"<image> question: {question} answer:"`. A decoder-only model puts each placeholder's media tokens
    there; an encoder-decoder reads media by cross-attention and drops the placeholders. Inputs the
    template does not place go first. Truncation cuts the prompt's text, never a placeholder.

    Args:
        tokenizer: the decoder's tokenizer (`TextTokenizer`): its start and end tokens frame each target.
        max_length: the most answer tokens, start and end included.
        prompt: the template (default: the task's, e.g. "{question}" for VQA, none for captioning).
        max_prompt_length: the most prompt text tokens.
        target_field: the record field to generate, replacing the task's (`sound` captions a clip's sound).
        inputs: modality → record field (see `TaskData`).
    """

    default_prompt = ""

    def __init__(self, *, tokenizer: Any, max_length: int = 32, prompt: str | None = None,
                 max_prompt_length: int = 48, target_field: str | None = None,
                 inputs: dict[str, str] | None = None):
        super().__init__(inputs=inputs)
        if target_field is not None:
            self.target_field = str(target_field)
        if max_length < 3:
            raise ValueError(f"max_length: expected at least 3 (start, one token, end), got {max_length}")
        if tokenizer.cls_id is None or tokenizer.sep_id is None:
            raise ValueError("the decoder's tokenizer needs start and end tokens ([CLS]/[SEP], <s>/</s>, ...)")
        self.tokenizer, self.max_length, self.max_prompt_length = tokenizer, max_length, max_prompt_length
        self.prompt = self.default_prompt if prompt is None else str(prompt)
        self._pieces = [p for p in re.split(r"(<[a-z]+>)", self.prompt) if p]
        for i, piece in enumerate(self._pieces):
            if piece.startswith("<") and piece.endswith(">") and piece[1:-1] not in MEDIA:
                raise ValueError(f"prompt: unknown placeholder {piece}; media placeholders are "
                                 + ", ".join(f"<{m}>" for m in MEDIA))
            if piece.startswith("<") and piece in self._pieces[:i]:
                raise ValueError(f"prompt: {piece} appears twice in {self.prompt!r}; each modality is placed once")
        try:
            self.prompt_fields = tuple(dict.fromkeys(f for _, f, _, _ in string.Formatter().parse(self.prompt) if f))
        except ValueError as error:
            raise ValueError(f"prompt: {error} in {self.prompt!r}") from None

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*super().fields, *self.prompt_fields]))

    def prompt_ids(self, record: dict[str, Any]) -> list[int]:
        """The prompt's ids for `record` (without the start token): media placeholders as `media_id`s."""
        placed = {p[1:-1] for p in self._pieces if p.startswith("<")}
        ids = [media_id(m) for m in sorted(self.inputs) if m not in placed]
        budget = self.max_prompt_length
        for piece in self._pieces:
            if piece.startswith("<") and piece.endswith(">"):
                ids.append(media_id(piece[1:-1]))
                continue
            text = self.tokenizer.ids(piece.format_map({k: str(v) for k, v in record.items()}))[:budget]
            budget -= len(text)
            ids.extend(text)
        return ids

    def longest_text(self) -> int:
        """The most text positions an example can take: the start token, the prompt's text (at most
        `max_prompt_length` with record fields in it) and the answer with its end token."""
        prompt = self.max_prompt_length if self.prompt_fields else sum(i >= 0 for i in self.prompt_ids({}))
        return 1 + prompt + self.max_length - 1

    def prompt_from_text(self, text: str | None) -> list[int]:
        """The prompt of a user's `text`: it fills the template's one field (a question), or with no
        field it continues the template."""
        if text is None:
            if self.prompt_fields:
                raise ValueError(f"this task's prompt {self.prompt!r} needs {', '.join(self.prompt_fields)}")
            return self.prompt_ids({})
        if len(self.prompt_fields) > 1:
            raise ValueError(f"this task's prompt {self.prompt!r} has several fields; give a record instead")
        if self.prompt_fields:
            return self.prompt_ids({self.prompt_fields[0]: text})
        return self.prompt_ids({}) + self.tokenizer.ids(text)[: self.max_prompt_length]

    def target(self, record: dict[str, Any]) -> dict[str, list[int]]:
        answer = self.tokenizer.ids(str(record[self.target_field]))[: self.max_length - 2]
        return {"prompt": self.prompt_ids(record), "answer": answer + [self.tokenizer.sep_id]}

    def collate_targets(self, targets: list[dict[str, list[int]]]) -> dict[str, Any]:
        """{"ids": (B, L) `[start] prompt answer [end]` right-padded, "mask": (B, L) bool, "loss_mask": (B, L)
        bool on the answer and end tokens, "prompt": the B prompts' id lists (to generate from)}."""
        rows = [[self.tokenizer.cls_id, *t["prompt"], *t["answer"]] for t in targets]
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self.tokenizer.pad_id, dtype=torch.long)
        mask = torch.zeros(len(rows), length, dtype=torch.bool)
        loss_mask = torch.zeros(len(rows), length, dtype=torch.bool)
        for i, (row, t) in enumerate(zip(rows, targets)):
            ids[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
            mask[i, : len(row)] = True
            loss_mask[i, len(row) - len(t["answer"]): len(row)] = True
        return {"ids": ids, "mask": mask, "loss_mask": loss_mask, "prompt": [t["prompt"] for t in targets]}

    def references(self, record: dict[str, Any]) -> list[str]:
        """The texts a prediction for `record` is scored against."""
        return [str(record[self.target_field])]


class TextGenerationTask(Task):
    """A text decoder over the model's memory: the loss is next-token cross-entropy on the target tokens
    (teacher forcing), predictions are generated from the start token.

    Args:
        data: its data side (a `TextTargetData`).
        decoder: the backbone's text decoder (the builder gives it).
        memory: what the decoder reads (`Backbone.memory`): with "fused" or "pooled" the fusion runs for it.
        num_beams: beams at prediction (1: greedy).
        max_new_tokens: the most tokens a prediction generates; default the data side's `max_length`.
        length_penalty: beam search's length penalty.
        cache: "dynamic" or "static": the KV cache at prediction (`GenerationSettings.cache`).
        compiled: each decoding step through `torch.compile` (CUDA graphs on a GPU); needs cache: static.
        label_smoothing: cross-entropy label smoothing.
        weight: multi-task loss weight.
    """

    data_class = TextTargetData
    data: TextTargetData
    needs = ("decoder",)

    def __init__(self, data: TextTargetData, *, decoder: Decoder, memory: str = "modalities", num_beams: int = 1,
                 max_new_tokens: int | None = None, length_penalty: float = 1.0, cache: str = "dynamic",
                 compiled: bool = False, label_smoothing: float = 0.0, weight: float = 1.0):
        super().__init__(data, weight=weight)
        self.decoder = Borrowed(decoder)
        self.needs_fusion = memory in ("fused", "pooled")
        self.label_smoothing = label_smoothing
        self.generation = GenerationSettings(max_new_tokens=max_new_tokens or data.max_length - 1,
                                             num_beams=num_beams, length_penalty=length_penalty,
                                             stop_ids=(data.tokenizer.sep_id,), cache=cache, compiled=compiled)

    def forward(self, out: ModelOutput, target: dict[str, Any]) -> dict[str, torch.Tensor]:
        ids, mask, loss_mask = target["ids"], target["mask"], target["loss_mask"]
        logits = self.decoder.module.next_logits(out, ids, mask)  # (B, L, V): position t predicts id t + 1
        labels = ids[:, 1:].masked_fill(~loss_mask[:, 1:], -100)  # only the answer is a target
        loss = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), labels.flatten(), ignore_index=-100,
                               label_smoothing=self.label_smoothing)
        return {"loss": loss}

    def predict_batch(self, model: nn.Module, inputs: dict[str, dict[str, torch.Tensor]],
                      target: dict[str, Any]) -> list[str]:
        """Generated text that continues each example's prompt (`collate_targets`' "prompt")."""
        return self.predict(model, inputs, prompts=target["prompt"])

    def predict(self, model: nn.Module, inputs: dict[str, dict[str, torch.Tensor]],
                settings: GenerationSettings | None = None, prompts: list[list[int]] | None = None,
                on_step: Callable[[torch.Tensor], None] | None = None) -> list[str]:
        """Generated text per example (greedy or beam search by the task's settings, or `settings`).

        `prompts`: each example's prompt ids (`TextTargetData.prompt_ids`); default: the media alone.
        `on_step`: given each step's (B,) token ids as they are made (`generation.generate`'s).
        """
        out = model.encode(inputs, fuse=self.needs_fusion)
        return [self.data.tokenizer.decode(t) for t in self.generate_ids(out, settings, prompts, on_step)]

    def generate_ids(self, out: ModelOutput, settings: GenerationSettings | None = None,
                     prompts: list[list[int]] | None = None,
                     on_step: Callable[[torch.Tensor], None] | None = None) -> list[list[int]]:
        """Token ids generated from `out` (each list cut before the end token)."""
        tokenizer = self.data.tokenizer
        some = out.memory if out.memory is not None else next(iter(out.modalities.values()))
        batch, device = some.tokens.shape[0], some.tokens.device
        if prompts is None:
            prompts = [self.data.prompt_from_text(None)] * batch
        if len(prompts) != batch:
            raise ValueError(f"{len(prompts)} prompts for a batch of {batch}")
        ids, mask = left_pad([[tokenizer.cls_id, *p] for p in prompts], tokenizer.pad_id)
        settings = settings or self.generation
        if tokenizer.sep_id not in settings.stop_ids:
            settings = replace(settings, stop_ids=(*settings.stop_ids, tokenizer.sep_id))
        return generate(lambda repeat, **options: self.decoder.module.start(out, repeat, **options),
                        ids.to(device), mask.to(device), settings, on_step)
