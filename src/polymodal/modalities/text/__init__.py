"""Text modality (seed §2.1)."""

from .encoder import TextEncoder
from .recurrent import RecurrentTextEncoder
