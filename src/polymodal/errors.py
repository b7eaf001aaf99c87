"""User-facing errors.

Anything a user can cause (a bad config key, a malformed manifest, a missing file) raises
`PolymodalError` with a message that names the file, line or key and what was expected. The CLI prints
that message and exits 1 instead of showing a traceback.
"""


class PolymodalError(Exception):
    """An error caused by user input; its message is shown to the user as is."""


class ConfigError(PolymodalError):
    """A config that cannot be turned into objects: unknown key, wrong type, missing value."""


class DataError(PolymodalError):
    """A manifest or media file that cannot be read."""
