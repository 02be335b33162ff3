"""The event type, and how events are identified and bounded."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter

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


@dataclass(frozen=True, kw_only=True)
class Event:
    """One trigger event, from the moment it is accepted (by the receiver, a poller, a schedule
    or ``zapflow run``) to the zap runs it starts: the inbox stores it, a dispatcher claims it,
    a run reads it. The one event type of the engine (an app's webhook adapter hands the
    receiver ``connectors._contract.Inbound`` items, which have no id yet).

    ``id`` is the de-duplication key: a redelivery of the same event must carry the same id
    (from the sender's delivery id, else a hash of what identifies the event).
    """

    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    app: str
    trigger: str
    payload: dict[str, Any]
    connection: str | None = None
    zap: str | None = None
    """Set when the event is for one zap only (its catch hook); else every matching zap runs."""
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    seq: int = 0
    """Its place in the inbox's queue (0 until it is stored and claimed)."""
    attempts: int = 0
    """How many times a dispatcher has claimed it (more than 1: a run may resume mid-way)."""

    @property
    def label(self) -> str:
        return f"{self.app}.{self.trigger} {self.id[:12]}"

    def to_json(self) -> dict[str, Any]:
        """The event as a flow run parameter (what ``from_json`` reads back)."""
        return {
            "id": self.id,
            "app": self.app,
            "trigger": self.trigger,
            "received_at": self.received_at.isoformat(),
            "payload": self.payload,
            **({"connection": self.connection} if self.connection else {}),
            **({"zap": self.zap} if self.zap else {}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        """An event from a flow run's parameters; a missing id or time is made up."""
        return _EVENT.validate_python(data)


_EVENT: TypeAdapter[Event] = TypeAdapter(Event)


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
