"""Early fusion (docs/concepts.md#fusion, #joint-modelling single-stream, #math-input): every modality's tokens in one
sequence, each
opened by its marker token, behind a CLS, through one joint transformer."""

from __future__ import annotations

import torch
from torch import nn

from ..layers.attention import keeping_attention_weights
from ..layers.markers import ModalityMarkers
from ..layers.positions import LearnedPositions, SinusoidalPositions, positions_from_mask, time_code_table
from ..layers.readout import place_by_position
from ..layers.transformer import TransformerEncoder
from ..modalities.base import EncoderOutput
from .base import FusionOutput

POSITIONS = {"sinusoidal": SinusoidalPositions, "learned": LearnedPositions}
POOLING = ("cls", "positional")


def concat_with_markers(markers: ModalityMarkers,
                        outputs: dict[str, EncoderOutput]) -> tuple[torch.Tensor, torch.Tensor]:
    """X = [m_1; X^(1); m_2; X^(2); ...] over the modalities in sorted order.

    Returns:
        tokens (B, sum(N_m + 1), D), mask (B, sum(N_m + 1)).
    """
    tokens, masks = [], []
    for name in sorted(outputs):
        t, m = markers(name, outputs[name].tokens, outputs[name].mask)
        tokens.append(t)
        masks.append(m)
    return torch.cat(tokens, dim=1), torch.cat(masks, dim=1)


def concat_times(outputs: dict[str, EncoderOutput]) -> torch.Tensor:
    """(sum(N_m + 1),) each concatenated token's time (`EncoderOutput.times`), laid out as
    `concat_with_markers` lays out the tokens; NaN for the markers and for untimed modalities."""
    parts = []
    for name in sorted(outputs):
        out = outputs[name]
        times = out.times if out.times is not None else out.tokens.new_full((out.tokens.shape[1],), float("nan"))
        parts.append(torch.cat([times.new_full((1,), float("nan")), times.float()]))
    return torch.cat(parts)


def split_marked(values: torch.Tensor, outputs: dict[str, EncoderOutput]) -> dict[str, torch.Tensor]:
    """Per-token values (B, sum(N_m + 1)) laid out as `concat_with_markers` lays out `outputs`, split back
    into {modality: (B, N_m)}, the markers left out."""
    parts, start = {}, 0
    for name in sorted(outputs):
        n = outputs[name].tokens.shape[1]
        parts[name] = values[:, start + 1:start + 1 + n]  # past the marker
        start += 1 + n
    return parts


def concat_presence(outputs: dict[str, EncoderOutput]) -> torch.Tensor:
    """(B, sum(N_m + 1)) 1 where the example has the modality of that concatenated token, else 0."""
    parts = []
    for name in sorted(outputs):
        out = outputs[name]
        parts.append(out.presence().to(out.mask.dtype)[:, None].expand(-1, out.tokens.shape[1] + 1))
    return torch.cat(parts, dim=1)


class EarlyFusion(nn.Module):
    """[CLS; m_1; X^(1); m_2; X^(2) ...] + PE → transformer → pooled.

    Args:
        modalities: the modality names this fusion accepts.
        width: D.
        depth: joint transformer layers.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / D.
        dropout: dropout in the joint layers.
        positions: `sinusoidal` (docs/concepts.md#math-positions) or `learned`, over the joint sequence.
        max_length: longest joint sequence (CLS included).
        pooling: how the pooled vector is read. `cls`: the CLS output. `positional`: the CLS output
            together with every position's output through its own weights (each token is projected to
            `readout_dim`, padding zeroed, the whole sequence flattened and mapped to D), so a head
            can tell *where* something is, not only *what* is there: what spatial questions need.
        readout_dim: per-token width of the positional readout.
        time_code: also add to every timed token (video frames, audio steps: `EncoderOutput.times`) a code
            of *when* it happens (`time_code_table`), the same for every modality, so attention can line up
            a sound with the frame it belongs to. The times are fractions of what each encoder was given:
            they line up when the frames and the audio cover the same span.
    """

    gives_tokens = True  # the joint token sequence, besides the pooled vector

    def __init__(self, modalities: list[str], width: int, *, depth: int = 4, num_heads: int = 4,
                 mlp_ratio: float = 4.0, dropout: float = 0.0, positions: str = "sinusoidal",
                 max_length: int = 512, pooling: str = "cls", readout_dim: int = 16, time_code: bool = False):
        super().__init__()
        if positions not in POSITIONS:
            raise ValueError(f"positions: expected 'sinusoidal' or 'learned', got {positions!r}")
        if pooling not in POOLING:
            raise ValueError(f"pooling: expected 'cls' or 'positional', got {pooling!r}")
        self.width, self.max_length, self.pooling, self.time_code = width, max_length, pooling, time_code
        self.markers = ModalityMarkers(sorted(modalities), width)
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        nn.init.normal_(self.cls, std=0.02)
        self.positions = POSITIONS[positions](width, max_length)
        self.transformer = TransformerEncoder(width, depth, num_heads, mlp_ratio=mlp_ratio, dropout=dropout)
        if pooling == "positional":
            self.readout_token = nn.Linear(width, readout_dim)
            self.readout = nn.Sequential(nn.Linear(width + max_length * readout_dim, width), nn.LayerNorm(width))

    def forward(self, outputs: dict[str, EncoderOutput]) -> FusionOutput:
        tokens, mask = concat_with_markers(self.markers, outputs)  # (B, N, D), (B, N)
        if self.time_code:  # (N, D) per layout position, zero for examples that lack the modality
            code = time_code_table(concat_times(outputs), self.width).to(tokens)
            tokens = tokens + code * concat_presence(outputs).to(tokens)[..., None]
        batch = tokens.shape[0]
        tokens = torch.cat([self.cls.expand(batch, -1, -1), tokens], dim=1)  # (B, 1 + N, D)
        mask = torch.cat([mask.new_ones(batch, 1), mask], dim=1)
        position_ids = positions_from_mask(mask)  # (B, 1 + N): padding inside the sequence moves nothing
        hidden = self.transformer(tokens + self.positions.at(position_ids, below=tokens.shape[1]).to(tokens.dtype), mask)
        pooled = hidden[:, 0] if self.pooling == "cls" else self._positional_readout(hidden, mask)
        return FusionOutput(pooled=pooled, tokens=hidden, mask=mask)

    def token_relevance(self, outputs: dict[str, EncoderOutput]) -> dict[str, torch.Tensor]:
        """How much the CLS output drew from each input token, by attention rollout (Abnar & Zuidema 2020):
        each layer's head-averaged attention, plus the residual, multiplied through the layers.

        Returns: {modality: (B, N_m)} over each modality's tokens (markers left out)."""
        if not self.transformer.blocks:
            raise ValueError("early fusion with depth 0 has no attention to roll out")
        with keeping_attention_weights(self):
            self(outputs)
        rollout = None
        for block in self.transformer.blocks:
            attention = block.attn.last_weights.mean(dim=1)  # (B, L, L)
            eye = torch.eye(attention.shape[-1], device=attention.device)
            attention = 0.5 * attention + 0.5 * eye
            attention = attention / attention.sum(dim=-1, keepdim=True)
            rollout = attention if rollout is None else attention @ rollout
        return split_marked(rollout[:, 0, 1:], outputs)  # the CLS row, past the CLS itself

    def _positional_readout(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, 1 + N, D) outputs → (B, D) from the CLS and every real token through its position's own weights."""
        per_token = self.readout_token(hidden[:, 1:])  # (B, N, readout_dim)
        placed = place_by_position(per_token, mask[:, 1:], self.max_length)  # a fixed place per position
        return self.readout(torch.cat([hidden[:, 0], placed.flatten(1)], dim=-1))  # (B, D)
