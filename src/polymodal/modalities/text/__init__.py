"""Text modality (docs/concepts.md#representation)."""

from .encoder import TextEncoder
from .recurrent import RecurrentTextEncoder
