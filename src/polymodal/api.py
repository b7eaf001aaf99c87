"""The Python API: `polymodal.load(path)` gives a trained model with methods matching its tasks."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from PIL import Image

from .builders import load_system
from .data.loader import collate_present, to_device
from .devices import resolve_device
from .errors import PolymodalError
from .explain import draw_explanation
from .evaluation.harness import evaluate, predict
from .generation import GenerationSettings
from .tasks import CaptionTask, ClassificationTask, CTCTask, GenerativeVQATask, TranscriptionTask, VQATask
from .tasks.generative import TextGenerationTask
from .tasks.media_generation import MediaGenerationTask
from .tasks.reconstruction import ReconstructionTask
from .runfolder import model_folder
from .system import System
from .tasks.vocab_head import VocabularyTask

ImageLike = str | Path | Image.Image


class LoadedModel:
    """A trained Polymodal model: `answer`, `classify`, `embed`, `retrieve`, `evaluate`. Whatever the
    device it runs on, what it returns is on the CPU: Python values, and tensors from `embed`.

    Args:
        system: the built model, processors and vocabularies.
        folder: the model folder it was loaded from.
        device: where the model runs: `auto` (a GPU when there is one), `cpu`, `cuda` or `cuda:N`.
    """

    def __init__(self, system: System, folder: Path, device: str | torch.device = "auto"):
        self.system = system
        self.folder = folder
        self.device = resolve_device(device)
        self.system.model.to(self.device).eval()

    @property
    def tasks(self) -> dict[str, str]:
        """Task name → task class name."""
        return {name: type(task).__name__ for name, task in self.system.model.tasks.items()}

    def _task_of(self, kind: type, name: str | None) -> str:
        names = [n for n, t in self.system.model.tasks.items() if isinstance(t, kind)]
        if name is not None:
            if name not in names:
                raise PolymodalError(f"this model has no {kind.__name__} task named {name!r}; it has: {names}")
            return name
        if not names:
            raise PolymodalError(f"this model was not trained for {kind.__name__}; its tasks: {self.tasks}")
        return names[0]

    def _inputs(self, **values: Any) -> dict[str, dict[str, torch.Tensor]]:
        """A batch's inputs from values per modality (None: the example lacks it)."""
        processors = self.system.processors
        return to_device({m: collate_present(processors[m], [None if v is None else processors[m].prepare(v, None)
                                                             for v in vs]) for m, vs in values.items()}, self.device)

    @torch.no_grad()
    def _encode(self, fuse: bool = True, **values: Any) -> Any:
        return self.system.model.encode(self._inputs(**values), fuse=fuse)

    @staticmethod
    def _top(head: VocabularyTask, probs: torch.Tensor, top_k: int) -> Any:
        if top_k == 1:
            return head.data.vocab[int(probs.argmax())]
        values, indices = probs.topk(min(top_k, len(head.data.vocab)))
        return [(head.data.vocab[i], float(v)) for v, i in zip(values.tolist(), indices.tolist())]

    @torch.no_grad()
    def answer(self, image: ImageLike | None = None, question: str = "", task: str | None = None, top_k: int = 1, *,
               video: str | Path | None = None, audio: str | Path | None = None) -> Any:
        """The answer to `question` about the task's media — `image`, or `video` (and `audio`) for a model
        trained on clips (with top_k > 1: a list of (answer, probability))."""
        generative = not any(isinstance(t, VQATask) for t in self.system.model.tasks.values())
        name = self._task_of(GenerativeVQATask if generative else VQATask, task)
        head = self.system.model.tasks[name]
        inputs = self._task_inputs(name, {"image": image, "video": video, "audio": audio, "text": question})
        if generative:  # free text; the question goes where the task reads it (an input, the prompt, or both)
            if top_k != 1:
                raise PolymodalError("top_k: a generative VQA model gives one answer (use generate(num_beams=...))")
            data = head.data
            prompt = data.prompt_from_text(question if data.prompt_fields else None)
            return head.predict(self.system.model, self._inputs(**inputs), prompts=[prompt])[0]
        return self._top(head, head.scores(self._encode(**inputs))[0], top_k)

    def explain(self, path: str | Path, question: str | None = None, task: str | None = None, *,
                image: ImageLike | None = None, video: str | Path | None = None,
                audio: str | Path | None = None) -> Path:
        """Save a picture of where the model looked for its answer (or label) to `path`, and return it."""
        kind = VQATask if question is not None else ClassificationTask
        name = self._task_of(kind, task)
        given = {"image": image, "video": video, "audio": audio, "text": question}
        inputs = self._inputs(**self._task_inputs(name, given))
        head = self.system.model.tasks[name]
        with torch.no_grad():
            probs = head.scores(self.system.model.encode(inputs))[0]
        title = (f"{question} → " if question else "") + str(self._top(head, probs, 1))
        return draw_explanation(self.system, inputs, title, Path(path))

    def _tokenizer(self) -> tuple[Any, Any]:
        """The tokenizer's encoder (an image's or a sound's) and its reconstruction head."""
        name = self._task_of(ReconstructionTask, None)
        head = self.system.model.tasks[name]
        return head.encoder.module, head

    @torch.no_grad()
    def encode_tokens(self, image: ImageLike | Sequence[ImageLike] | None = None, *,
                      audio: str | Path | Sequence[str | Path] | None = None,
                      video: str | Path | Sequence[str | Path] | None = None) -> torch.Tensor:
        """A tokenizer's codes for `image` (an image tokenizer: the grid's cells in raster order), `audio` (a
        sound tokenizer: in time order) or `video` (a video tokenizer: each frame's grid, frame after
        frame): (N,) long for one item, (B, N) for a list."""
        encoder, _ = self._tokenizer()
        modality, given = next(((m, v) for m, v in (("audio", audio), ("video", video)) if v is not None),
                               ("image", image))
        if given is None or modality != encoder.modality:
            raise PolymodalError(f"this is an {encoder.modality} "
                                 f"tokenizer: give {encoder.modality}=")
        single = isinstance(given, (str, Path, Image.Image))
        out = self._encode(fuse=False, **{modality: [given] if single else list(given)}).modalities[modality]
        return out.codes[0].cpu() if single else out.codes.cpu()

    @torch.no_grad()
    def decode_tokens(self, codes: torch.Tensor | Sequence[int] | Sequence[Sequence[int]]) -> Any:
        """What a tokenizer's codes stand for: for (N,) codes one PIL image (an image tokenizer), one float32
        waveform array in [-1, 1] at the tokenizer's `sample_rate` (a sound tokenizer, through its vocoder)
        or one uint8 clip (T, S, S, 3) (a video tokenizer); for (B, N) a list."""
        encoder, head = self._tokenizer()
        codes = torch.as_tensor(codes, dtype=torch.long, device=self.device)
        single = codes.dim() == 1
        codes = codes[None] if single else codes
        if codes.dim() != 2 or codes.shape[1] != encoder.num_tokens:
            item = {"audio": "sound", "video": "clip"}.get(encoder.modality, "image")
            raise PolymodalError(f"codes: expected {encoder.num_tokens} codes per {item} (a {encoder.grid} grid), "
                                 f"got shape {tuple(codes.shape)}")
        if int(codes.min()) < 0 or int(codes.max()) >= encoder.num_codes:
            raise PolymodalError(f"codes: expected values from 0 to {encoder.num_codes - 1}")
        media = encoder.media_from(head.decoder(encoder.embed_codes(codes)))  # images in [0, 1] or waveforms
        if encoder.modality == "audio":
            items = list(media.cpu().numpy())
        elif encoder.modality == "video":  # (B, T, 3, S, S) in [0, 1]
            items = list((media.movedim(-3, -1) * 255).round().to(torch.uint8).cpu().numpy())
        else:
            items = [Image.fromarray((p.permute(1, 2, 0).cpu().numpy() * 255).round().astype("uint8")) for p in media]
        return items[0] if single else items

    @torch.no_grad()
    def classify(self, image: ImageLike | None = None, task: str | None = None, top_k: int = 1, *,
                 video: str | Path | None = None, audio: str | Path | None = None) -> Any:
        """The label of `image` (or `video` / `audio`, whichever the task reads), with top_k > 1: a list of
        (label, probability)."""
        name = self._task_of(ClassificationTask, task)
        head = self.system.model.tasks[name]
        inputs = self._task_inputs(name, {"image": image, "video": video, "audio": audio})
        return self._top(head, head.scores(self._encode(**inputs))[0], top_k)

    @torch.no_grad()
    def transcribe(self, audio: str | Path | Sequence[str | Path], task: str | None = None,
                   batch_size: int = 32) -> str | list[str]:
        """The words spoken in `audio` (a file; a list in, a list out): by the model's CTC task (its beam
        search, rescored by the attention decoder when the task says so), else its `transcription` task's
        decoder."""
        single = isinstance(audio, (str, Path))
        paths = [audio] if single else list(audio)
        kinds = self.system.model.tasks
        ctc = [n for n, t in kinds.items() if isinstance(t, CTCTask)]
        if task is None:
            name = ctc[0] if ctc else self._task_of(TranscriptionTask, None)
        else:
            name = task if task in ctc else self._task_of(TranscriptionTask, task)
        head = kinds[name]
        texts: list[str] = []
        for start in range(0, len(paths), batch_size):
            chunk = [str(p) for p in paths[start:start + batch_size]]
            if isinstance(head, CTCTask):
                texts += head.predict_output(self._encode(fuse=False, audio=chunk))
            else:
                texts += self.generate(audios=chunk, task=name)
        return texts[0] if single else texts

    @torch.no_grad()
    def label_probabilities(self, examples: Sequence[dict[str, Any]], task: str | None = None) -> tuple[list[str], torch.Tensor]:
        """A batch's labels at once: the task's labels (a VQA task's answers) and each example's probabilities
        over them, (N, labels) on the CPU. Each example is {modality: value} with the media the task reads
        (and "text": the question, for VQA); `task`: a classification or VQA task (default: the first
        classification task)."""
        kinds = (ClassificationTask, VQATask)
        if task is None:
            task = self._task_of(ClassificationTask, None)
        elif task not in self.system.model.tasks or not isinstance(self.system.model.tasks[task], kinds):
            raise PolymodalError(f"task {task!r} is not a classification or VQA task; this model's tasks: {self.tasks}")
        if not examples:
            raise PolymodalError("examples: expected at least one")
        head = self.system.model.tasks[task]
        rows = [self._task_inputs(task, dict(example)) for example in examples]
        inputs = {m: [row[m][0] for row in rows] for m in rows[0]}
        return list(head.data.vocab), head.scores(self._encode(**inputs)).cpu()

    @torch.no_grad()
    def generate(self, prompt: str | Sequence[str] | None = None, *, images: Sequence[ImageLike] = (),
                 videos: Sequence[str | Path] = (), audios: Sequence[str | Path] = (), task: str | None = None,
                 num_beams: int = 1, sample: bool = False, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, seed: int = 0, max_new_tokens: int | None = None,
                 length_penalty: float = 1.0, cache: str | None = None, compiled: bool | None = None,
                 on_step: Callable[[torch.Tensor], None] | None = None) -> list[str]:
        """Generated text for each example, batched: the i-th of `images` / `videos` / `audios` (whichever
        the generative task reads) is example i; `prompt` (one, or one per example) is text the generation
        continues. Greedy by default; `num_beams` > 1 for beam search, `sample=True` (with `temperature`,
        `top_k`, `top_p`, `seed`) for sampling. `cache="static"` and `compiled=True` decode with a static
        KV cache and compiled steps (the same tokens; faster on a GPU); default: the task's settings.
        `on_step`: given each step's (B,) token ids as they are made, -1 for finished rows (greedy or
        sampled decoding): what `polymodal serve` streams."""
        name = self._task_of(self._caption_kind() if task is None else TextGenerationTask, task)
        head = self.system.model.tasks[name]
        given = {"image": list(images), "video": list(videos), "audio": list(audios)}
        sizes = {m: len(v) for m, v in given.items() if v}
        if not sizes:
            raise PolymodalError(f"task {name!r} reads {', '.join(head.data.inputs)}: give images=, videos= or audios=")
        if len(set(sizes.values())) > 1:
            raise PolymodalError(f"one value per example for each modality; got {sizes}")
        batch = next(iter(sizes.values()))
        values = {m: given[m] if given.get(m) else [None] * batch for m in head.data.inputs if m in given}
        if not any(given.get(m) for m in head.data.inputs):
            raise PolymodalError(f"task {name!r} reads {', '.join(head.data.inputs)}; got {', '.join(sizes)}")
        texts = [prompt] * batch if prompt is None or isinstance(prompt, str) else list(prompt)
        if len(texts) != batch:
            raise PolymodalError(f"{len(texts)} prompts for {batch} examples")
        try:
            prompts = [head.data.prompt_from_text(t) for t in texts]
            settings = GenerationSettings(max_new_tokens=max_new_tokens or head.generation.max_new_tokens,
                                          num_beams=num_beams, length_penalty=length_penalty, sample=sample,
                                          temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                                          stop_ids=head.generation.stop_ids,
                                          cache=head.generation.cache if cache is None else cache,
                                          compiled=head.generation.compiled if compiled is None else compiled)
        except ValueError as error:
            raise PolymodalError(str(error)) from None
        return head.predict(self.system.model, self._inputs(**values), settings=settings, prompts=prompts,
                            on_step=on_step)

    @torch.no_grad()
    def generate_image(self, prompt: str | Sequence[str], n: int = 4, *, guidance: float | None = None, seed: int = 0,
                       temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
                       steps: int | None = None, task: str | None = None) -> list[Image.Image] | list[list[Image.Image]]:
        """`n` images drawn for `prompt` (a list of PIL images), or for each of several prompts (a list of
        lists): classifier-free guidance of scale `guidance` (default: the task's; 1.0: off), sampling with
        `temperature` / `top_k` / `top_p` (default: the task's) from `seed`, so the same call draws the same
        images; `steps`: the passes of a parallel decoder (`decoding: parallel`; default the task's)."""
        groups = self._draw("image", prompt, n, guidance=guidance, seed=seed, temperature=temperature,
                            top_k=top_k, top_p=top_p, steps=steps, task=task)
        images = [[Image.fromarray(p) for p in group.numpy()] for group in groups]
        return images[0] if isinstance(prompt, str) else images

    @torch.no_grad()
    def generate_audio(self, prompt: str | Sequence[str], n: int = 1, *, guidance: float | None = None,
                       seed: int = 0, temperature: float | None = None, top_k: int | None = None,
                       top_p: float | None = None, steps: int | None = None,
                       task: str | None = None) -> tuple[Any, int]:
        """Sounds made for `prompt`: (waveforms, sample rate), the waveforms a float32 array (n, samples) in
        [-1, 1], or (prompts, n, samples) for a list of prompts; the settings as `generate_image`'s."""
        groups = self._draw("audio", prompt, n, guidance=guidance, seed=seed, temperature=temperature,
                            top_k=top_k, top_p=top_p, steps=steps, task=task)
        waves = torch.stack(groups).numpy()
        rate = self.system.model.tasks[self._drawing_task("audio", task)].encoder.module.sample_rate
        return (waves[0] if isinstance(prompt, str) else waves), rate

    @torch.no_grad()
    def generate_video(self, prompt: str | Sequence[str], n: int = 1, *, guidance: float | None = None,
                       seed: int = 0, temperature: float | None = None, top_k: int | None = None,
                       top_p: float | None = None, steps: int | None = None, task: str | None = None) -> Any:
        """Clips made for `prompt`: a uint8 array (n, T, S, S, 3) of RGB frames, or (prompts, n, T, S, S, 3)
        for a list of prompts; the settings as `generate_image`'s."""
        groups = self._draw("video", prompt, n, guidance=guidance, seed=seed, temperature=temperature,
                            top_k=top_k, top_p=top_p, steps=steps, task=task)
        clips = torch.stack(groups).numpy()
        return clips[0] if isinstance(prompt, str) else clips

    def _drawing_task(self, modality: str, name: str | None) -> str:
        """The generation task (named `name`, else the first) that makes `modality`."""
        names = [n for n, t in self.system.model.tasks.items()
                 if isinstance(t, MediaGenerationTask) and t.data.modality == modality]
        if name is None and names:
            return names[0]
        if name in names:
            return name
        what = {"image": "text_to_image", "audio": "text_to_audio", "video": "text_to_video"}[modality]
        raise PolymodalError(f"this model has no {what} task{f' named {name!r}' if name else ''}; its tasks: {self.tasks}")

    def _draw(self, modality: str, prompt: str | Sequence[str], n: int, *, guidance: float | None, seed: int,
              temperature: float | None, top_k: int | None, top_p: float | None, steps: int | None,
              task: str | None) -> list[torch.Tensor]:
        """Per prompt, `n` media of `modality` drawn by its generation task (each the task's `to_media`)."""
        name = self._drawing_task(modality, task)
        head = self.system.model.tasks[name]
        texts = [prompt] if isinstance(prompt, str) else list(prompt)
        if n < 1 or not texts:
            raise PolymodalError(f"n: expected at least one item for at least one prompt, got n={n}, {len(texts)} prompts")
        changes = {k: v for k, v in {"temperature": temperature, "top_k": top_k, "top_p": top_p}.items()
                   if v is not None}
        if steps is not None and (head.decoding != "parallel" or not 1 <= steps <= head.data.media.length):
            raise PolymodalError(f"steps: {steps} is for a parallel decoder (decoding: parallel), 1 to its "
                                 f"{head.data.media.length} codes; task {name!r} decodes {head.decoding}")
        try:
            settings = replace(head.settings, **changes)
            codes = head.draw([head.data.prompt_ids(t) for t in texts], samples=n, guidance=guidance, seed=seed,
                              settings=settings, steps=steps)
        except ValueError as error:
            raise PolymodalError(str(error)) from None
        media = head.to_media(codes)  # (len(texts) · n, ...)
        return [media[i * n: (i + 1) * n] for i in range(len(texts))]

    def _caption_kind(self) -> type:
        """Captioning when the model has it, else any generative task."""
        has = any(isinstance(t, CaptionTask) for t in self.system.model.tasks.values())
        return CaptionTask if has else TextGenerationTask

    def caption(self, image: ImageLike | Sequence[ImageLike] | None = None, *,
                video: str | Path | Sequence[str | Path] | None = None,
                audio: str | Path | Sequence[str | Path] | None = None, task: str | None = None,
                **settings: Any) -> str | list[str]:
        """The caption of `image` (or `video`, `audio`): one in, one text out; a list in, a list out.
        `settings`: as for `generate` (num_beams, sample, top_p, ...)."""
        given = {"images": image, "videos": video, "audios": audio}
        single = all(v is None or isinstance(v, (str, Path)) or not isinstance(v, Sequence) for v in given.values())
        lists = {k: ([v] if single else list(v)) for k, v in given.items() if v is not None}
        out = self.generate(task=task, **lists, **settings)
        return out[0] if single else out

    def _task_inputs(self, name: str, given: dict[str, Any]) -> dict[str, list[Any]]:
        """One example for task `name`: each modality it reads, from `given` (None where the task can do
        without it: a learned placeholder); a clear error for a missing one it needs."""
        task = self.system.model.tasks[name]
        wanted = list(task.data.inputs)
        have = [m for m in wanted if given.get(m) not in (None, "")]
        missing = [m for m in task.data.required_modalities if m not in have]
        if missing or not have:
            words = {"text": "question"}
            raise PolymodalError(f"task {name!r} reads {', '.join(words.get(m, m) for m in wanted)}; "
                                 f"missing: {', '.join(words.get(m, m) for m in (missing or wanted))}")
        return {m: [given[m] if m in have else None] for m in wanted}

    @torch.no_grad()
    def embed(self, *, images: Sequence[ImageLike] = (), texts: Sequence[str] = (), videos: Sequence[str | Path] = (),
              audios: Sequence[str | Path] = ()) -> dict[str, torch.Tensor]:
        """L2-normalised embeddings in the shared space, per modality given: {"image": (N, E), "text": (M, E),
        "video": ..., "audio": ...}. Needs a model with a shared space (`model.embed_dim`: a dual encoder,
        a joint transformer with one, a student distilled into its teacher's space)."""
        if self.system.model.backbone.embed_dim is None:
            raise PolymodalError(f"this model has no shared embedding space (model.embed_dim); its tasks: "
                                 f"{self.tasks}")
        given = {"image": list(images), "text": list(texts), "video": list(videos), "audio": list(audios)}
        result = {}
        for modality, values in given.items():
            if values:
                if modality not in self.system.processors:
                    raise PolymodalError(f"this model has no {modality} encoder; it has: "
                                         f"{', '.join(sorted(self.system.processors))}")
                result[modality] = self._encode(fuse=False, **{modality: values}).embeddings[modality].cpu()
        return result

    def retrieve(self, text: str, images: Sequence[ImageLike], k: int = 5) -> list[tuple[int, float]]:
        """The k images most similar to `text`: (index into `images`, cosine similarity), best first."""
        emb = self.embed(images=images, texts=[text])
        scores = (emb["text"] @ emb["image"].T)[0]
        values, indices = scores.topk(min(k, len(images)))
        return list(zip(indices.tolist(), values.tolist()))

    def predict(self, task: str, records: list[dict[str, Any]], batch_size: int = 256) -> list[Any]:
        return predict(self.system, task, records, batch_size, self.device)

    def evaluate(self, records: list[dict[str, Any]], batch_size: int = 256,
                 drop: tuple[str, ...] = (), tasks: tuple[str, ...] | None = None) -> dict[str, dict[str, float]]:
        """{task: {metric: value}}; `drop`: modalities removed from every record first; `tasks`: only these."""
        return evaluate(self.system, records, batch_size, self.device, drop=drop, tasks=tasks)


def load(path: str | Path, device: str | torch.device = "auto") -> LoadedModel:
    """Load a trained model from a run folder or its `model/` folder, onto `device`: `auto` (the GPU when
    there is one, else the CPU), `cpu`, `cuda` or `cuda:N`."""
    return LoadedModel(load_system(path), model_folder(path), device)
