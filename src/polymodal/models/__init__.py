"""Joint models (seed §2.3): each composes modality encoders with one fusion strategy."""

from .dual_encoder import DualEncoder
from .joint_transformer import JointTransformer
from .output import ModelOutput

MODELS = {"dual_encoder": DualEncoder, "joint_transformer": JointTransformer}

__all__ = ["DualEncoder", "JointTransformer", "ModelOutput", "MODELS"]
