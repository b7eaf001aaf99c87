"""Joint models (seed §2.3): one composition of modality encoders, an embedding space and a fusion."""

from .composition import MultimodalModel
from .output import ModelOutput

__all__ = ["ModelOutput", "MultimodalModel"]
