"""Reading a request's JSON body field by field: every wrong value is a 400 that names the field and what
was expected, never a traceback."""

from __future__ import annotations

import json
import math
from typing import Any

from .errors import APIError

MISSING = object()


def parse_json(raw: bytes) -> Any:
    """The body as JSON; malformed JSON or text that is not UTF-8 is a 400 saying where."""
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise APIError(400, f"body: not UTF-8 (byte {error.start})", param="body") from None
    except json.JSONDecodeError as error:
        raise APIError(400, f"body: malformed JSON at line {error.lineno}, column {error.colno}: {error.msg}",
                       param="body") from None
    except RecursionError:
        raise APIError(400, "body: JSON nested too deeply", param="body") from None


class Fields:
    """A JSON object's fields, read with their types and bounds checked; `where` prefixes field names
    ("messages[0].content[1]") in messages."""

    def __init__(self, value: Any, where: str = ""):
        if not isinstance(value, dict):
            raise APIError(400, f"{where or 'body'}: expected a JSON object, got {_kind(value)}", param=where or "body")
        self.value, self.where = value, where

    def name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def _get(self, key: str, default: Any) -> Any:
        value = self.value.get(key, MISSING)
        if value is MISSING or value is None:
            if default is MISSING:
                raise APIError(400, f"{self.name(key)}: required", param=self.name(key))
            return default
        return value

    def _wrong(self, key: str, expected: str, value: Any) -> APIError:
        return APIError(400, f"{self.name(key)}: expected {expected}, got {_kind(value)}", param=self.name(key))

    def str(self, key: str, default: Any = MISSING, *, choices: tuple[str, ...] = (), max_length: int = 1 << 20) -> Any:
        value = self._get(key, default)
        if value is default:
            return value
        if not isinstance(value, str):
            raise self._wrong(key, "a string", value)
        if choices and value not in choices:
            raise APIError(400, f"{self.name(key)}: expected one of {', '.join(choices)}, got {value[:40]!r}",
                           param=self.name(key))
        if len(value) > max_length:
            raise APIError(413, f"{self.name(key)}: more than {max_length} characters", param=self.name(key),
                           code="too_large")
        return value

    def int(self, key: str, default: Any = MISSING, *, low: int | None = None, high: int | None = None) -> Any:
        value = self._get(key, default)
        if value is default:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._wrong(key, "an integer", value)
        if (low is not None and value < low) or (high is not None and value > high):
            raise APIError(400, f"{self.name(key)}: expected {_range(low, high)}, got {value}", param=self.name(key))
        return value

    def float(self, key: str, default: Any = MISSING, *, low: float | None = None, high: float | None = None) -> Any:
        value = self._get(key, default)
        if value is default:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self._wrong(key, "a finite number", value)
        if (low is not None and value < low) or (high is not None and value > high):
            raise APIError(400, f"{self.name(key)}: expected {_range(low, high)}, got {value}", param=self.name(key))
        return float(value)

    def bool(self, key: str, default: Any = MISSING) -> Any:
        value = self._get(key, default)
        if value is not default and not isinstance(value, bool):
            raise self._wrong(key, "true or false", value)
        return value

    def list(self, key: str, default: Any = MISSING, *, most: int, fewest: int = 1) -> Any:
        value = self._get(key, default)
        if value is default:
            return value
        if not isinstance(value, list):
            raise self._wrong(key, "a list", value)
        if len(value) < fewest:
            raise APIError(400, f"{self.name(key)}: expected at least {fewest} item(s)", param=self.name(key))
        if len(value) > most:
            raise APIError(413, f"{self.name(key)}: {len(value)} items, at most {most} in one request",
                           param=self.name(key), code="too_many_items")
        return value

    def object(self, key: str, default: Any = MISSING) -> Any:
        value = self._get(key, default)
        return value if value is default else Fields(value, self.name(key))


def _range(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"a value from {low} to {high}"
    return f"at least {low}" if low is not None else f"at most {high}"


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
             float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)
