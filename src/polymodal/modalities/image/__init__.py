"""Image modality (seed §2.1)."""

from .encoders import CNNImageEncoder, ViTImageEncoder
