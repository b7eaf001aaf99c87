"""A served model: what it can do (chat, embeddings, labels, drawings, sounds) and the batched calls the
server's batcher runs, each taking a list of requests' items and giving one result per item."""

from __future__ import annotations

import io
import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..api import LoadedModel
from ..generation import GenerationSettings
from ..tasks import CaptionTask, ClassificationTask, CTCTask, GenerativeVQATask, TranscriptionTask, VQATask
from ..tasks.generative import TextGenerationTask
from ..tasks.media_generation import MediaGenerationTask
from .errors import APIError


@dataclass
class ChatItem:
    """One chat request as the model reads it: the question (or None), one media value per modality, the
    decoding settings, and `emit(row, token_id)`, called from the worker thread as tokens are made."""

    text: str | None
    media: dict[str, Any]
    n: int = 1
    max_tokens: int = 32
    sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    emit: Callable[[int, int], None] | None = None


@dataclass
class ChatResult:
    """Per choice: its token ids (a stop token included, when one ended it) and why it ended."""

    ids: list[list[int]] = field(default_factory=list)
    finish: list[str] = field(default_factory=list)
    prompt_tokens: int = 0


class ServedModel:
    """A loaded model under a name, with its tasks sorted by what the API offers."""

    def __init__(self, name: str, model: LoadedModel):
        self.name, self.model = name, model
        tasks = model.system.model.tasks
        kinds = [(n, t) for n, t in tasks.items()]
        self.generative = next((n for n, t in kinds if isinstance(t, (GenerativeVQATask, CaptionTask))), None) \
            or next((n for n, t in kinds if isinstance(t, TextGenerationTask)), None)
        self.vqa = next((n for n, t in kinds if isinstance(t, VQATask)), None)
        self.classifiers = [n for n, t in kinds if isinstance(t, ClassificationTask)]
        self.drawers = {t.data.modality: n for n, t in reversed(kinds) if isinstance(t, MediaGenerationTask)}
        # speech to text: CTC tasks first (their joint decoding), then attention decoders
        self.transcribers = [n for n, t in kinds if isinstance(t, CTCTask)] + \
            [n for n, t in kinds if isinstance(t, TranscriptionTask)]
        self.embeds = model.system.model.backbone.embed_dim is not None
        self.modalities = sorted(model.system.processors)

    # ------------------------------------------------------------------ what it offers
    @property
    def capabilities(self) -> list[str]:
        offered = []
        if self.generative or self.vqa:
            offered.append("chat")
        if self.embeds:
            offered += ["embeddings", "rerank", "search"]
        if self.classifiers:
            offered.append("classify")
        offered += [{"image": "images", "audio": "audio", "video": "video"}[m] for m in sorted(self.drawers)]
        if self.transcribers:
            offered.append("transcriptions")
        return offered

    def card(self) -> dict[str, Any]:
        """The /v1/models entry: OpenAI's fields, plus the tasks, modalities and endpoints it offers."""
        chat = self.generative or self.vqa
        reads = list(self.model.system.model.tasks[chat].data.inputs) if chat else []
        return {"id": self.name, "object": "model", "created": int(Path(self.model.folder).stat().st_mtime),
                "owned_by": "polymodal", "tasks": self.model.tasks, "modalities": self.modalities,
                "capabilities": self.capabilities, "chat_reads": [m for m in reads if m != "text"],
                "embedding_dim": self.model.system.model.backbone.embed_dim}

    # ------------------------------------------------------------------ chat
    def chat_task(self) -> str:
        name = self.generative or self.vqa
        if name is None:
            raise APIError(400, f"model {self.name!r} has no chat task (generative or VQA); its endpoints: "
                                f"{', '.join(self.capabilities) or 'none'}", param="model", code="unsupported")
        return name

    def chat_media(self) -> tuple[str, ...]:
        """The media modalities the chat task reads."""
        return tuple(m for m in self.model.system.model.tasks[self.chat_task()].data.inputs if m != "text")

    def check_chat(self, item: ChatItem) -> int:
        """Refuse what the chat task cannot read (a 400 naming it); the prompt's length in tokens."""
        name = self.chat_task()
        head = self.model.system.model.tasks[name]
        wanted = self.chat_media()
        for modality in item.media:
            if modality not in wanted:
                raise APIError(400, f"messages: model {self.name!r} reads {', '.join(wanted) or 'no media'} in "
                                    f"chat, not {modality}", param="messages", code="unsupported_media")
        missing = [m for m in head.data.required_modalities if m != "text" and m not in item.media]
        if missing:
            raise APIError(400, f"messages: model {self.name!r} needs a{'n' if missing[0][0] in 'aeiou' else ''} "
                                f"{missing[0]} part in the conversation", param="messages")
        if name == self.vqa and name != self.generative:
            if not item.text:
                raise APIError(400, "messages: a question (a text part) is needed", param="messages")
            limit = self.model.system.processors["text"].max_length
            used = len(self.model.system.processors["text"].tokenizer.ids(item.text)) + 2
            if used > limit:
                raise APIError(400, f"messages: the question is {used} tokens, model {self.name!r} reads at most "
                                    f"{limit}", param="messages", code="context_length_exceeded")
            return used
        data = head.data
        text = item.text if data.prompt_fields else None
        if text is not None and len(data.tokenizer.ids(text)) > data.max_prompt_length:
            raise APIError(400, f"messages: the prompt is {len(data.tokenizer.ids(text))} tokens, model "
                                f"{self.name!r} reads at most {data.max_prompt_length}", param="messages",
                           code="context_length_exceeded")
        if data.prompt_fields and not text:
            raise APIError(400, f"messages: model {self.name!r} answers a question: give a text part",
                           param="messages")
        if item.max_tokens > head.generation.max_new_tokens:
            raise APIError(400, f"max_tokens: model {self.name!r} writes at most {head.generation.max_new_tokens} "
                                f"tokens, got {item.max_tokens}", param="max_tokens")
        return 1 + len(data.prompt_from_text(text))

    def chat_key(self, item: ChatItem) -> tuple:
        """Requests that may share a pass: greedy ones together; sampled ones with the same settings."""
        return ("chat", self.name, item.sample, item.temperature if item.sample else None,
                item.top_p if item.sample else None, item.seed if item.sample else None)

    def run_chat(self, items: Sequence[ChatItem]) -> list[ChatResult]:
        """One batched pass over the items' choices (each item's `n` rows)."""
        name = self.chat_task()
        head = self.model.system.model.tasks[name]
        rows = [(i, c) for i, item in enumerate(items) for c in range(item.n)]
        if name == self.vqa and name != self.generative:
            return self._answer(name, items)
        first = items[0]
        media = {m: [items[i].media.get(m) for i, _ in rows] for m in self.chat_media()}
        prompts = [items[i].text if head.data.prompt_fields else None for i, _ in rows]
        tokens: list[list[int]] = [[] for _ in rows]
        limit = [items[i].max_tokens for i, _ in rows]
        stops = set(head.generation.stop_ids) | {head.data.tokenizer.sep_id}

        def on_step(step: torch.Tensor) -> None:
            for r, token in enumerate(step.tolist()):
                if token < 0 or len(tokens[r]) >= limit[r] or (tokens[r] and tokens[r][-1] in stops):
                    continue
                tokens[r].append(token)
                i, c = rows[r]
                if items[i].emit is not None:
                    items[i].emit(c, token)

        settings = dict(sample=first.sample, temperature=first.temperature, top_p=first.top_p, seed=first.seed,
                        max_new_tokens=max(limit))
        model = self.model
        values = {m: [None if v is None else v for v in vs] for m, vs in media.items()}
        prompt_ids = [head.data.prompt_from_text(p) for p in prompts]
        inputs = model._inputs(**values)
        full = GenerationSettings(stop_ids=head.generation.stop_ids, cache=head.generation.cache,
                                  compiled=head.generation.compiled, **settings)
        with torch.no_grad():
            head.predict(model.system.model, inputs, settings=full, prompts=prompt_ids, on_step=on_step)
        results = [ChatResult(prompt_tokens=1 + len(head.data.prompt_from_text(prompts[rows.index((i, 0))])))
                   for i in range(len(items))]
        for r, (i, _) in enumerate(rows):
            ended = bool(tokens[r]) and tokens[r][-1] in stops
            results[i].ids.append(tokens[r])
            results[i].finish.append("stop" if ended else "length")
        return results

    def _answer(self, name: str, items: Sequence[ChatItem]) -> list[ChatResult]:
        labels, probs = self.model.label_probabilities([{**it.media, "text": it.text} for it in items], task=name)
        tokenizer = self.model.system.processors["text"].tokenizer
        out = []
        for item, p in zip(items, probs):
            answer = labels[int(p.argmax())]
            ids = tokenizer.ids(answer)
            out.append(ChatResult(ids=[ids] * item.n, finish=["stop"] * item.n,
                                  prompt_tokens=len(tokenizer.ids(item.text or "")) + 2))
        return out

    def decode(self, ids: list[int]) -> str:
        """Generated ids → text (the chat task's tokenizer; a stop token and what follows are dropped)."""
        name = self.chat_task()
        head = self.model.system.model.tasks[name]
        if name == self.vqa and name != self.generative:
            return self.model.system.processors["text"].tokenizer.decode(ids)
        stops = set(head.generation.stop_ids) | {head.data.tokenizer.sep_id}
        cut = next((k for k, t in enumerate(ids) if t in stops), len(ids))
        return head.data.tokenizer.decode(ids[:cut])

    # ------------------------------------------------------------------ embeddings, labels
    def check_embeds(self, modality: str, param: str) -> None:
        if not self.embeds:
            raise APIError(400, f"model {self.name!r} has no shared embedding space; its endpoints: "
                                f"{', '.join(self.capabilities) or 'none'}", param="model", code="unsupported")
        if modality not in self.modalities:
            raise APIError(400, f"{param}: model {self.name!r} embeds {', '.join(self.modalities)}, not {modality}",
                           param=param, code="unsupported_media")

    def count_tokens(self, text: str) -> int:
        return len(self.model.system.processors["text"].tokenizer.ids(text)) if "text" in self.modalities else 0

    def check_text(self, text: str, param: str) -> None:
        processor = self.model.system.processors.get("text")
        limit = getattr(processor, "max_length", None)
        if limit is not None and len(processor.tokenizer.ids(text)) + 2 > limit:
            raise APIError(400, f"{param}: {len(processor.tokenizer.ids(text)) + 2} tokens, model {self.name!r} "
                                f"reads at most {limit}", param=param, code="context_length_exceeded")

    def run_embed(self, modality: str, values: Sequence[Any]) -> list[np.ndarray]:
        key = {"image": "images", "text": "texts", "video": "videos", "audio": "audios"}[modality]
        vectors = self.model.embed(**{key: list(values)})[modality]
        return list(vectors.float().numpy())

    def _pick(self, tasks: list[str], task: str | None, kind: str, verb: str) -> str:
        """`task` (the request's), or the first of `tasks`; a 400 naming what the model has otherwise."""
        if not tasks:
            raise APIError(400, f"model {self.name!r} has no {kind} task; its endpoints: "
                                f"{', '.join(self.capabilities) or 'none'}", param="model", code="unsupported")
        if task is None:
            return tasks[0]
        if task not in tasks:
            raise APIError(400, f"task: model {self.name!r} {verb} with {', '.join(tasks)}, not {task!r}", param="task")
        return task

    def classifier(self, task: str | None) -> str:
        return self._pick(self.classifiers, task, "classification", "classifies")

    def classifier_reads(self, task: str) -> tuple[str, ...]:
        return tuple(self.model.system.model.tasks[task].data.inputs)

    def run_classify(self, task: str, examples: Sequence[dict[str, Any]]) -> list[tuple[list[str], np.ndarray]]:
        labels, probs = self.model.label_probabilities(list(examples), task=task)
        return [(labels, p.numpy()) for p in probs]

    # ------------------------------------------------------------------ speech to text
    def transcriber(self, task: str | None) -> str:
        return self._pick(self.transcribers, task, "ctc or transcription", "transcribes")

    def run_transcribe(self, task: str, paths: Sequence[str]) -> list[str]:
        """The words of each audio file, in one batched pass."""
        return self.model.transcribe(list(paths), task=task)

    # ------------------------------------------------------------------ drawings, sounds
    def drawer(self, modality: str) -> str:
        if modality not in self.drawers:
            what = {"image": "text_to_image", "audio": "text_to_audio"}[modality]
            raise APIError(400, f"model {self.name!r} has no {what} task; its endpoints: "
                                f"{', '.join(self.capabilities) or 'none'}", param="model", code="unsupported")
        return self.drawers[modality]

    def draw_size(self) -> str:
        task = self.model.system.model.tasks[self.drawer("image")]
        side = task.data.media.image_size if hasattr(task.data.media, "image_size") else None
        return f"{side}x{side}" if side else "auto"

    def run_images(self, request: dict[str, Any]) -> list[bytes]:
        images = self.model.generate_image(request["prompt"], n=request["n"], guidance=request["guidance"],
                                           seed=request["seed"], task=self.drawer("image"))
        out = []
        for image in images:
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            out.append(buffer.getvalue())
        return out

    def run_audio(self, request: dict[str, Any]) -> list[bytes]:
        waves, rate = self.model.generate_audio(request["prompt"], n=request["n"], guidance=request["guidance"],
                                                seed=request["seed"], task=self.drawer("audio"))
        return [wav_bytes(w, rate) for w in waves]


def wav_bytes(wave_: np.ndarray, rate: int) -> bytes:
    """A mono float waveform in [-1, 1] as a 16-bit PCM WAV file."""
    pcm = (np.clip(wave_, -1.0, 1.0) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(int(rate))
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()
