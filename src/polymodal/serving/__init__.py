"""`polymodal serve`: an OpenAI-compatible server over trained models (docs/tutorials/serving.md)."""

from .app import ServeSettings, create_app
from .engine import ServedModel
from .media import MediaLimits

__all__ = ["MediaLimits", "ServeSettings", "ServedModel", "create_app"]
