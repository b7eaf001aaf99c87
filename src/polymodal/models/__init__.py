"""Joint models (docs/concepts.md#joint-modelling): the backbone, one composition of modality encoders, an embedding
space and a
fusion; decoders and teachers."""

from .backbone import Backbone
from .output import ModelOutput

MultimodalModel = Backbone  # the name before 0.3

__all__ = ["Backbone", "ModelOutput", "MultimodalModel"]
