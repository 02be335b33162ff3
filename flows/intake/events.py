"""An event as the inbox keeps it."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

MAX_DEPTH = 64
"""How deeply arrays and objects may nest in anything the inbox accepts. Real webhook bodies
stay under 20; a body nested hundreds deep cannot be recorded or run (serialisers and Prefect's
history give up on it), so it is refused at the door rather than accepted and never run."""


class TooDeep(ValueError):
    """A body or payload nested deeper than ``MAX_DEPTH``."""


def check_depth(value: Any, limit: int = MAX_DEPTH) -> None:
    """Raise ``TooDeep`` if ``value`` nests arrays/objects more than ``limit`` levels; walks
    without recursion, so any depth is measured safely."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > limit:
            raise TooDeep(f"the JSON nests arrays and objects more than {limit} levels deep")
        stack.extend((child, depth + 1) for child in children)


@dataclass(frozen=True)
class NewEvent:
    """An event accepted by the receiver (or a poller, or a schedule), before it is stored.

    ``id`` is the de-duplication key: a redelivery of the same event must carry the same id
    (from the sender's delivery id, else a hash of what identifies the event).
    """

    id: str
    app: str
    trigger: str
    payload: dict[str, Any]
    connection: str | None = None
    zap: str | None = None
    """Set when the event is for one zap only (its catch hook); else every matching zap runs."""
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class StoredEvent(NewEvent):
    """An event claimed from the inbox by a dispatcher."""

    seq: int = 0
    attempts: int = 0


def derived_id(*parts: str | None) -> str:
    """A deterministic event id from what identifies the occurrence (e.g. zap and item key):
    the same parts always give the same id, so the inbox stores the occurrence once."""
    return hashlib.sha256("\x1f".join(p or "" for p in parts).encode()).hexdigest()[:32]


def occurrence_id(*parts: str | None) -> str:
    """The event id of a delivered occurrence: derived from its parts, the last of which is
    what identifies it (a redelivery then gets the same id); a fresh id when that is None —
    nothing identifies the occurrence, so it is never taken for a duplicate."""
    if parts[-1] is None:
        return uuid.uuid4().hex
    return derived_id(*parts)
