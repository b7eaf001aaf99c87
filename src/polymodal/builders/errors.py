"""One way a part's complaint about its settings becomes a config error at the part's config path."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import ConfigError

_NAMES_A_KEY = re.compile(r"[A-Za-z_][\w.]*(\[\d+\])?: ")  # "depth: ..." or "frame.image_size: ..."


@contextmanager
def config_errors(where: str) -> Iterator[None]:
    """Raise a part's `ValueError` as a `ConfigError` at `where`, the part's config path.

    Modules word their errors in their own parameters' names ("depth: must divide width"); a message that
    starts with such a name lands under it (`model.fusion.depth: must divide width`), any other after the
    path (`model.fusion: ...`)."""
    try:
        yield
    except ConfigError:
        raise
    except ValueError as error:
        message = str(error)
        raise ConfigError(f"{where}{'.' if _NAMES_A_KEY.match(message) else ': '}{message}") from None
