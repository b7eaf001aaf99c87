"""Pictures of where a model looked: each input token's relevance to the fused answer (attention rollout
for early fusion, cross-attention weights for the multi-stream and perceiver fusions), drawn over the
image's patches and as bars over words, frames and audio steps."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from .errors import PolymodalError  # noqa: E402
from .fusion import FUSIONS  # noqa: E402
from .fusion.base import ExplainsTokens  # noqa: E402
from .models.encoding import encode_all  # noqa: E402


def relevance(system: Any, inputs: dict[str, dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """{modality: (B, N_m)} each input token's relevance to the fused output, from the model's fusion."""
    backbone = system.model.backbone
    fusion = backbone.fusion
    if not isinstance(fusion, ExplainsTokens):
        attending = ", ".join(n for n, cls in FUSIONS.items() if issubclass(cls, ExplainsTokens))
        raise PolymodalError(f"{type(fusion).__name__} combines pooled vectors: there is no attention over "
                             f"tokens to show (--explain needs one of these fusions: {attending})")
    with torch.no_grad():
        return fusion.token_relevance(encode_all(backbone.encoders, inputs, backbone.absent))


def _grid(values: np.ndarray) -> np.ndarray | None:
    """Patch tokens as a square grid (a leading CLS dropped), or None if they are not one."""
    for skip in (0, 1):
        side = math.isqrt(len(values) - skip)
        if side > 1 and side * side == len(values) - skip:
            return values[skip:].reshape(side, side)
    return None


def draw_explanation(system: Any, inputs: dict[str, dict[str, torch.Tensor]], title: str, path: Path) -> Path:
    """Save a figure of `relevance` for the first example of `inputs`: the image with a heat map over its
    patches, and bars over words, frames and audio steps."""
    scores = {m: r[0].float().cpu().numpy() for m, r in relevance(system, inputs).items()}
    fig, axes = plt.subplots(1, len(scores), figsize=(4.2 * len(scores), 3.6), squeeze=False)
    for ax, (modality, values) in zip(axes[0], sorted(scores.items())):
        grid = _grid(values) if modality == "image" else None
        if modality == "image" and grid is not None and "data" in inputs["image"]:
            picture = system.processors["image"].processor.to_pil(inputs["image"]["data"][0])
            ax.imshow(picture)
            ax.imshow(grid, cmap="inferno", alpha=0.55, extent=(0, picture.width, picture.height, 0),
                      interpolation="bilinear")
            ax.set_axis_off()
        else:
            labels = [str(i) for i in range(len(values))]
            if modality == "text" and "data" in inputs["text"]:
                tokenizer = system.processors["text"].tokenizer
                ids = inputs["text"]["data"][0][inputs["text"]["mask"][0]].tolist()
                labels = [tokenizer.decode([i]) or "·" for i in ids]
                values = values[:len(ids)]
            ax.bar(range(len(values)), values, color="tab:orange")
            ax.set_xticks(range(len(values)), labels, rotation=60, ha="right", fontsize=8)
            ax.set_ylabel("relevance")
        ax.set_title(modality)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
