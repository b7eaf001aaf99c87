"""Dual encoder (seed §2.2 late fusion, §3.1 contrastive pre-training): CLIP-style."""

from __future__ import annotations

from torch import nn

from ..fusion.late import LateFusion
from .embedding import embed, logit_scale, projections
from .encoding import encode_all
from .output import ModelOutput


class DualEncoder(nn.Module):
    """One encoder per modality, a linear projection of each pooled vector into a shared space.

    Args:
        encoders: modality name → encoder returning `EncoderOutput` of width `width`.
        width: D, the encoders' output width.
        embed_dim: E, the shared embedding width.
        init_temperature: initial softmax temperature (logit scale = 1 / temperature).
        combine: how `pooled` (for classification / VQA heads) combines the modalities.
    """

    def __init__(self, encoders: dict[str, nn.Module], *, width: int, embed_dim: int = 128,
                 init_temperature: float = 0.07, combine: str = "concat"):
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.projections = projections(list(encoders), width, embed_dim)
        self.logit_scale = logit_scale(init_temperature)
        self.fusion = LateFusion(list(encoders), width, combine)

    def forward(self, inputs: dict[str, dict[str, torch.Tensor]], fuse: bool = True) -> ModelOutput:
        """`fuse` is for the joint models' sake: late fusion is one cheap layer, always computed."""
        outputs = encode_all(self.encoders, inputs)
        embeddings, scale = embed(self.projections, self.logit_scale, outputs)
        pooled = self.fusion({name: out.pooled for name, out in outputs.items()})
        return ModelOutput(
            modalities=outputs,
            pooled=pooled,
            embeddings=embeddings,
            logit_scale=scale,
        )
