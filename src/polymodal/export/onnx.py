"""`polymodal export RUN --format onnx --out DIR`: each modality encoder, and each task head that scores
labels, as an ONNX graph with a dynamic batch axis, checked against PyTorch
with `onnxruntime` before the export is called done.

A graph's inputs are what the model's processors make of raw media, named `<modality>.<key>` (an image's
normalised pixels `image.data`, a text's token ids `text.data` and mask `text.mask`, padded to the text
encoder's `max_length`: a graph's text length is fixed, its batch is not); `export.json` says
each graph's inputs and outputs with their shapes, and how to make the inputs (image size and
normalisation, the text tokenizer copied beside the graphs). Decoders that write text or media are not ONNX
graphs here: `--format hf` writes a decoder-only model as a Hugging Face folder instead.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..api import LoadedModel
from ..data.media import write_audio, write_video
from ..errors import PolymodalError
from ..tasks.vocab_head import VocabularyTask

ATOL = 1e-4
OPSET = 17


def _sample_values(model: LoadedModel, folder: Path) -> dict[str, list[Any]]:
    """Three raw examples per modality (files written to `folder` for sound and clips)."""
    values: dict[str, list[Any]] = {}
    for modality in model.system.processors:
        if modality == "image":
            values[modality] = [Image.new("RGB", (40, 40), c) for c in ((200, 30, 30), (30, 200, 30), (30, 30, 200))]
        elif modality == "text":
            values[modality] = ["a red circle", "a blue square", "two large green triangles at the top right of the picture"]
        elif modality == "audio":
            t = np.arange(16000) / 16000
            values[modality] = [str(write_audio(folder / f"a{i}.wav", 0.3 * np.sin(2 * np.pi * f * t), 16000))
                                for i, f in enumerate((220, 440, 880))]
        elif modality == "video":
            frames = [np.full((8, 32, 32, 3), 60 * i, dtype=np.uint8) for i in range(1, 4)]
            values[modality] = [str(write_video(folder / f"v{i}.mp4", f, fps=8, lossless=True))
                                for i, f in enumerate(frames)]
    return values


class _Graph(nn.Module):
    """The model from flat input tensors (in `names` order) to the tensors `pick` takes from its output."""

    def __init__(self, model: nn.Module, names: list[tuple[str, str]], pick: Callable[[Any], tuple[torch.Tensor, ...]],
                 fuse: bool):
        super().__init__()
        self.model, self.names, self.pick, self.fuse = model, names, pick, fuse

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        inputs: dict[str, dict[str, torch.Tensor]] = {}
        for (modality, key), tensor in zip(self.names, tensors):
            inputs.setdefault(modality, {})[key] = tensor
        return self.pick(self.model.encode(inputs, fuse=self.fuse))


def _export(graph: _Graph, batch: dict[str, dict[str, torch.Tensor]], outputs: list[str], path: Path,
            check: dict[str, dict[str, torch.Tensor]]) -> dict[str, Any]:
    """Export one graph, run it in onnxruntime on another batch size, compare with PyTorch."""
    import onnxruntime

    names = [f"{m}.{k}" for m, k in graph.names]
    tensors = tuple(batch[m][k] for m, k in graph.names)
    axes = {n: {0: "batch"} for n in names}
    axes.update({o: {0: "batch"} for o in outputs})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, tensors, str(path), input_names=names, output_names=outputs, dynamic_axes=axes,
                          opset_version=OPSET, dynamo=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {f"{m}.{k}": check[m][k].numpy() for m, k in graph.names}
    got = session.run(outputs, feeds)
    with torch.no_grad():
        want = graph(*(check[m][k] for m, k in graph.names))
    error = max(float(np.abs(g.astype(np.float64) - w.double().numpy()).max()) for g, w in zip(got, want))
    if error > ATOL:
        raise PolymodalError(f"{path.name}: onnxruntime's outputs differ from PyTorch's by {error:.2e} (> {ATOL})")
    return {"file": path.name, "inputs": {f"{m}.{k}": {"shape": list(batch[m][k].shape[1:]), "dtype": str(batch[m][k].dtype)}
                                          for m, k in graph.names},
            "outputs": outputs, "max_abs_error": error}


def export_onnx(model: LoadedModel, out: str | Path, log: Callable[[str], Any] = print) -> Path:
    """Write `encoder-<modality>.onnx` per modality, `task-<name>.onnx` per labelling task, the tokenizer
    and `export.json` to `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    system = model.system
    net = system.model.cpu().eval()
    graphs: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        values = _sample_values(model, Path(tmp))
        batch = {m: _padded(model, m, model._inputs(**{m: v[:2]})[m]) for m, v in values.items()}
        check = {m: _padded(model, m, model._inputs(**{m: v})[m]) for m, v in values.items()}
    for modality in system.processors:
        names = [(modality, k) for k in batch[modality]]
        shared = system.model.backbone.embed_dim is not None and modality in system.model.backbone.projections

        def pick(out: Any, m: str = modality, shared: bool = shared) -> tuple[torch.Tensor, ...]:
            e = out.modalities[m]
            return (e.tokens, e.pooled, out.embeddings[m]) if shared else (e.tokens, e.pooled)
        outputs = ["tokens", "pooled", "embedding"] if shared else ["tokens", "pooled"]
        graphs[f"encoder-{modality}"] = _export(_Graph(net, names, pick, fuse=False), batch, outputs,
                                                out / f"encoder-{modality}.onnx", check)
        log(f"encoder-{modality}.onnx: max |onnxruntime − torch| = {graphs[f'encoder-{modality}']['max_abs_error']:.1e}")
    for name, task in system.model.tasks.items():
        if not isinstance(task, VocabularyTask):
            skipped[name] = (f"{type(task).__name__}: not a labelling head" +
                             ("; export a decoder-only model with --format hf" if hasattr(task, "decoder") else ""))
            continue
        reads = list(task.data.inputs)
        names = [(m, k) for m in reads for k in batch[m]]
        graphs[f"task-{name}"] = _export(_Graph(net, names, lambda out, t=task: (t.scores(out),), fuse=True), batch,
                                         ["probabilities"], out / f"task-{name}.onnx", check)
        graphs[f"task-{name}"]["labels"] = list(task.data.vocab)
        log(f"task-{name}.onnx: max |onnxruntime − torch| = {graphs[f'task-{name}']['max_abs_error']:.1e}")
    tokenizer = getattr(system.processors.get("text"), "tokenizer", None)
    if tokenizer is not None and hasattr(tokenizer, "save"):
        tokenizer.save(out / "tokenizer.json")
    preprocess = {m: _preprocessing(p) for m, p in system.processors.items()}
    (out / "export.json").write_text(json.dumps({"source": str(model.folder), "opset": OPSET, "graphs": graphs,
                                                 "not_exported": skipped, "preprocessing": preprocess}, indent=2) + "\n")
    model.system.model.to(model.device)
    return out


def _padded(model: LoadedModel, modality: str, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A text batch padded to the processor's `max_length` (the graphs' fixed text length); others as they are."""
    if modality != "text":
        return batch
    length = model.system.processors["text"].max_length
    ids, mask = batch["data"].cpu(), batch["mask"].cpu()
    pad = model.system.processors["text"].tokenizer.pad_id
    return {"data": torch.nn.functional.pad(ids, (0, length - ids.shape[1]), value=pad),
            "mask": torch.nn.functional.pad(mask, (0, length - mask.shape[1]), value=False)}


def _preprocessing(processor: Any) -> dict[str, Any]:
    """What a user must do to raw media to make a graph's inputs."""
    inner = getattr(processor, "processor", None) or getattr(processor, "video", None) or getattr(processor, "audio", None)
    facts = {k: getattr(inner, k) for k in ("image_size", "num_frames", "sample_rate", "duration", "mean", "std")
             if inner is not None and hasattr(inner, k)}
    if hasattr(processor, "max_length"):
        facts["max_length"] = processor.max_length
        facts["tokenizer"] = "tokenizer.json"
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in facts.items()
            if isinstance(v, (int, float, str, list, tuple))}
