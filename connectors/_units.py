"""Units every app and the engine read from YAML and settings: durations and sizes."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*)+$")
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
DURATION_HELP = 'a number of seconds or a duration such as "30s", "5m", "1h30m", "2d", "PT10M"'


def parse_duration(value: Any) -> Any:
    """``90`` / ``"90s"`` / ``"1h30m"`` / ``"2d"`` → timedelta; ISO 8601 is left to pydantic."""
    if isinstance(value, bool):
        raise ValueError(f"expected {DURATION_HELP}")
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    if isinstance(value, str) and _DURATION.match(value):
        return timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in _PART.findall(value)))
    if isinstance(value, str) and not value.strip().upper().startswith("P"):
        raise ValueError(f"{value!r} is not a duration; expected {DURATION_HELP}")
    return value


_SIZE = re.compile(r"^\s*(\d+)\s*(b|kb|kib|mb|mib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2}


def parse_size(text: str) -> int:
    """``"1MiB"`` / ``"512KiB"`` / ``"2MB"`` / ``"65536"`` → bytes (at least 1)."""
    found = _SIZE.match(text)
    size = int(found[1]) * _SIZE_UNITS[(found[2] or "").lower()] if found else 0
    if size < 1:
        raise ValueError(
            f"{text!r} is not a size; expected a whole number of bytes, KB, KiB, MB or MiB "
            "such as 1MiB, 512KiB or 65536"
        )
    return size


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": r"^(\s*\d+(\.\d+)?\s*(ms|s|m|h|d|w)\s*)+$|^P"},
            ],
            "description": DURATION_HELP,
        }
    ),
]
