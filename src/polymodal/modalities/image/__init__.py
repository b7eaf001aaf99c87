"""Image modality (docs/concepts.md#representation)."""

from .encoders import CNNImageEncoder, ViTImageEncoder
