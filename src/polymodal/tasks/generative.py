"""Tasks whose answer is generated text (seed §2.4, §3.1 generative pre-training): a decoder reads the
model's memory and is trained with teacher forcing; predictions are decoded by `polymodal.generation`.

Captioning, generative VQA and transcription are this with their own inputs, target field and metrics.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..generation import GenerationSettings, generate, left_pad
from ..models.output import ModelOutput
from .base import Task, TaskData


class TextTargetData(TaskData):
    """Targets are token ids of a record's text field, `[start] tokens [end]`, truncated to `max_length`;
    a batch of them is ragged, padded on the right with a mask.

    Args:
        tokenizer: the decoder's tokenizer (`TextTokenizer`): its start and end tokens frame each target.
        max_length: the most target tokens, start and end included.
        inputs: modality → record field (see `TaskData`).
    """

    def __init__(self, *, tokenizer: Any, max_length: int = 32, inputs: dict[str, str] | None = None):
        super().__init__(inputs=inputs)
        if max_length < 3:
            raise ValueError(f"max_length: expected at least 3 (start, one token, end), got {max_length}")
        if tokenizer.cls_id is None or tokenizer.sep_id is None:
            raise ValueError("the decoder's tokenizer needs start and end tokens ([CLS]/[SEP], <s>/</s>, ...)")
        self.tokenizer, self.max_length = tokenizer, max_length

    def target(self, record: dict[str, Any]) -> list[int]:
        ids, mask = self.tokenizer.encode_batch([str(record[self.target_field])], self.max_length)
        return ids[0][mask[0]].tolist()

    def collate_targets(self, targets: list[list[int]]) -> dict[str, torch.Tensor]:
        """{"ids": (B, L) right-padded, "mask": (B, L) bool} for targets of different lengths."""
        length = max(len(t) for t in targets)
        ids = torch.full((len(targets), length), self.tokenizer.pad_id, dtype=torch.long)
        mask = torch.zeros(len(targets), length, dtype=torch.bool)
        for i, t in enumerate(targets):
            ids[i, : len(t)] = torch.as_tensor(t, dtype=torch.long)
            mask[i, : len(t)] = True
        return {"ids": ids, "mask": mask}

    def references(self, record: dict[str, Any]) -> list[str]:
        """The texts a prediction for `record` is scored against."""
        return [str(record[self.target_field])]


class TextGenerationTask(Task):
    """A text decoder over the model's memory: the loss is next-token cross-entropy on the target tokens
    (teacher forcing), predictions are generated from the start token.

    Args:
        data: its data side (a `TextTargetData`).
        num_beams: beams at prediction (1: greedy).
        max_new_tokens: the most tokens a prediction generates; default the data side's `max_length`.
        length_penalty: beam search's length penalty.
        label_smoothing: cross-entropy label smoothing.
        weight: multi-task loss weight.
    """

    data_class = TextTargetData
    data: TextTargetData
    needs = ("decoder",)

    def __init__(self, data: TextTargetData, *, num_beams: int = 1, max_new_tokens: int | None = None,
                 length_penalty: float = 1.0, label_smoothing: float = 0.0, weight: float = 1.0):
        super().__init__(data, weight=weight)
        self.label_smoothing = label_smoothing
        self.generation = GenerationSettings(max_new_tokens=max_new_tokens or data.max_length - 1,
                                             num_beams=num_beams, length_penalty=length_penalty,
                                             stop_ids=(data.tokenizer.sep_id,))

    def forward(self, out: ModelOutput, target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        ids, mask = target["ids"].to(out.memory.tokens.device), target["mask"].to(out.memory.tokens.device)
        logits = out.decoder(ids[:, :-1], mask[:, :-1], context=out.memory.tokens,
                             context_mask=out.memory.mask)  # (B, L-1, V)
        labels = ids[:, 1:].masked_fill(~mask[:, 1:], -100)  # (B, L-1): padding is not a target
        loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100,
                               label_smoothing=self.label_smoothing)
        return {"loss": loss}

    def predict(self, model: nn.Module, inputs: dict[str, dict[str, torch.Tensor]],
                settings: GenerationSettings | None = None, prompts: list[str] | None = None) -> list[str]:
        """Generated text per example (greedy or beam search by the task's settings, or `settings`).

        `prompts`: text each generation continues, after the start token (default: none).
        """
        out = model.encode(inputs, fuse=self.fused)
        tokens = self.generate_ids(out, settings, prompts)
        return [self.data.tokenizer.decode(t) for t in tokens]

    def generate_ids(self, out: ModelOutput, settings: GenerationSettings | None = None,
                     prompts: list[str] | None = None) -> list[list[int]]:
        """Token ids generated over `out.memory` (each list cut before the end token)."""
        tokenizer, memory = self.data.tokenizer, out.memory
        batch = memory.tokens.shape[0]
        rows = [[tokenizer.cls_id] for _ in range(batch)]
        if prompts is not None:
            if len(prompts) != batch:
                raise ValueError(f"{len(prompts)} prompts for a batch of {batch}")
            for row, prompt in zip(rows, prompts):
                ids, mask = tokenizer.encode_batch([prompt], self.data.max_length)
                row.extend(t for t in ids[0][mask[0]].tolist() if t not in (tokenizer.cls_id, tokenizer.sep_id))
        ids, mask = left_pad(rows, tokenizer.pad_id)
        settings = settings or self.generation
        if tokenizer.sep_id not in settings.stop_ids:
            settings = replace(settings, stop_ids=(*settings.stop_ids, tokenizer.sep_id))
        device = memory.tokens.device
        return generate(lambda repeat: out.decoder.session(memory.tokens, memory.mask, repeat),
                        ids.to(device), mask.to(device), settings)
