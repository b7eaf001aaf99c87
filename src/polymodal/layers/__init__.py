"""Transformer building blocks (docs/concepts.md#math): attention, positions, modality markers, blocks."""

from .attention import MultiHeadAttention, load_torch_mha_
from .markers import ModalityMarkers
from .positions import LearnedPositions, SinusoidalPositions, positions_from_mask, sinusoidal_table
from .transformer import TransformerBlock, TransformerEncoder, init_weights_

__all__ = [
    "LearnedPositions",
    "ModalityMarkers",
    "MultiHeadAttention",
    "SinusoidalPositions",
    "TransformerBlock",
    "TransformerEncoder",
    "init_weights_",
    "load_torch_mha_",
    "positions_from_mask",
    "sinusoidal_table",
]
