"""The storage port: values zaps keep between runs, as the engine hands them to apps.

An app reaches zapflow's store through ``ActionContext.storage()`` (the engine keeps the table:
``flows.intake.storage``), never through the engine's modules. Every ``change`` is atomic
across every process sharing the database.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from connectors._errors import PermanentError

MAX_KEY_LENGTH = 255
MAX_VALUE_BYTES = 64 * 1024
MAX_KEYS = 10_000
"""Keys per namespace."""


class Missing:
    """No value is stored under the key."""


MISSING = Missing()
Change = Callable[[Any], tuple[Any, Any]]
"""``change(current) -> (new value or MISSING to delete, what to return)``; ``current`` is
MISSING when the key holds nothing."""


def check_value(value: Any, what: str = "value") -> Any:
    size = len(json.dumps(value, ensure_ascii=False).encode())
    if size > MAX_VALUE_BYTES:
        raise PermanentError(
            f"{what}: a stored value is at most {MAX_VALUE_BYTES // 1024} KB as JSON; this "
            f"one would be {size:,} bytes"
        )
    return value


class KeyValueStore(Protocol):
    """Namespaced keys holding JSON values."""

    async def get(self, namespace: str, key: str) -> Any:
        """The value, or MISSING."""
        ...

    async def get_all(self, namespace: str) -> dict[str, Any]:
        """Every key of the namespace and its value, in key order."""
        ...

    async def change(self, namespace: str, key: str, change: Change) -> Any:
        """Apply ``change`` to the key's value atomically; return what it returns."""
        ...


async def no_storage() -> KeyValueStore:
    """The storage of an action run where the engine gave none."""
    raise PermanentError("no store is available to this step (zapflow's database is not open)")
