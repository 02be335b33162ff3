"""Deliveries kept as *unrecognised*: store first, interpret second.

A delivery on an app's hook URL with the right token comes from the sender the user connected.
When the app's webhook adapter cannot read it (a key spelled another way, a status nobody
documented, a family subscribed to the wrong URL), refusing it would lose it: senders such as
CINNOX retry a few times and give up. So the receiver keeps it here, as delivered and with the
reason, and answers 200. Nothing is lost:

- it stays ``waiting`` until it has been dealt with: retention never purges a waiting one;
- ``zapflow events --unrecognised`` lists them, ``zapflow events ID`` shows one in full;
- once the app reads it (a fix to the connector, or a zap on the trigger it now maps to),
  ``zapflow reprocess ID…`` (or ``--unrecognised [--app …]``) reads it again through the same
  adapter, commits the events it makes to the inbox and marks it ``reprocessed`` — in one
  transaction — and the dispatcher runs their zaps as for any event.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from flows.events import Event, occurrence_id
from flows.intake.db import CHUNK, event_rows, events, unrecognised
from flows.intake.inbox import Inbox

WAITING, REPROCESSED = "waiting", "reprocessed"


@dataclass(frozen=True)
class Unrecognised:
    """One kept delivery."""

    id: str
    app: str
    connection: str | None
    channel: str
    body: Any
    """The delivered JSON, as delivered (usually an object)."""
    reason: str
    received_at: datetime
    state: str
    attempts: int
    handled_at: datetime | None
    event_ids: list[str] | None


@dataclass(frozen=True)
class Outcome:
    """What reprocessing one delivery did."""

    delivery: Unrecognised
    events: list[Event]
    """The events it made (committed to the inbox), empty if it still cannot be read."""
    error: str | None = None
    """Why it still cannot be read (it stays waiting, with this as its reason)."""


def _row(row: sa.Row[Any]) -> Unrecognised:
    return Unrecognised(
        id=row.id,
        app=row.app,
        connection=row.connection,
        channel=row.channel,
        body=row.body,
        reason=row.reason,
        received_at=row.received_at,
        state=row.state,
        attempts=row.attempts,
        handled_at=row.handled_at,
        event_ids=row.event_ids,
    )


async def keep(
    inbox: Inbox,
    *,
    app: str,
    connection: str | None,
    channel: str,
    body: Any,
    reason: str,
) -> str:
    """Commit a delivery its app cannot read; return its id once it is durable."""
    delivery_id = uuid.uuid4().hex
    async with inbox.write_engine.begin() as conn:
        await conn.execute(
            unrecognised.insert().values(
                id=delivery_id,
                app=app,
                connection=connection,
                channel=channel,
                body=body,
                reason=reason,
                received_at=datetime.now(UTC),
                state=WAITING,
                attempts=0,
            )
        )
    return delivery_id


async def listing(
    inbox: Inbox,
    *,
    limit: int = 20,
    app: str | None = None,
    connection: str | None = None,
    waiting_only: bool = True,
    ids: list[str] | None = None,
) -> list[Unrecognised]:
    """Kept deliveries, oldest first: those waiting (or all), of one app or connection, or those
    whose id starts with one of ``ids``."""
    stmt = sa.select(unrecognised).order_by(unrecognised.c.seq)
    if waiting_only:
        stmt = stmt.where(unrecognised.c.state == WAITING)
    if app is not None:
        stmt = stmt.where(unrecognised.c.app == app)
    if connection is not None:
        stmt = stmt.where(unrecognised.c.connection == connection)
    if ids:
        stmt = stmt.where(sa.or_(*(unrecognised.c.id.startswith(i, autoescape=True) for i in ids)))
    if limit:
        stmt = stmt.limit(limit)
    async with inbox.engine.connect() as conn:
        return [_row(row) for row in (await conn.execute(stmt)).all()]


async def waiting_count(inbox: Inbox) -> int:
    """How many kept deliveries wait to be reprocessed."""
    async with inbox.engine.connect() as conn:
        return int(
            (
                await conn.execute(
                    sa.select(sa.func.count()).where(unrecognised.c.state == WAITING)
                )
            ).scalar_one()
        )


def read(delivery: Unrecognised) -> list[Event]:
    """The events the app's webhook adapter makes of a kept delivery now (raises its error,
    usually a ValueError saying what it cannot read)."""
    from connectors import registry

    owner = registry.load(delivery.app)
    if owner.webhook is None:
        raise ValueError(f"app {delivery.app!r} no longer takes webhook deliveries")
    result = owner.webhook(delivery.channel, delivery.body)
    if not isinstance(result, list):  # a handshake (e.g. a challenge): nothing to run
        return []
    return [
        Event(
            id=occurrence_id(delivery.app, delivery.connection, item.key),
            app=delivery.app,
            trigger=item.trigger,
            payload=item.payload,
            connection=delivery.connection,
            received_at=delivery.received_at,
        )
        for item in result
    ]


async def reprocess(inbox: Inbox, deliveries: list[Unrecognised]) -> list[Outcome]:
    """Read each delivery again; commit the events it makes and mark it reprocessed, or note
    why it still cannot be read. Each delivery is one transaction."""
    outcomes = []
    for delivery in deliveries:
        if delivery.state != WAITING:
            outcomes.append(Outcome(delivery, [], f"already {delivery.state}"))
            continue
        try:
            made = read(delivery)
        except Exception as exc:  # the adapter's reason, whatever it raised
            reason = _reason(exc)
            await _note(inbox, delivery.id, reason)
            outcomes.append(Outcome(delivery, [], reason))
            continue
        await _resolve(inbox, delivery.id, made)
        outcomes.append(Outcome(delivery, made))
    return outcomes


def _reason(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"


async def _note(inbox: Inbox, delivery_id: str, reason: str) -> None:
    async with inbox.write_engine.begin() as conn:
        await conn.execute(
            unrecognised.update()
            .where(unrecognised.c.id == delivery_id)
            .values(reason=reason, attempts=unrecognised.c.attempts + 1)
        )


async def _resolve(inbox: Inbox, delivery_id: str, made: list[Event]) -> None:
    insert = postgresql.insert if inbox.engine.dialect.name == "postgresql" else sqlite.insert
    now = datetime.now(UTC)
    async with inbox.write_engine.begin() as conn:
        for start in range(0, len(made), CHUNK // 10):
            rows = event_rows(made[start : start + CHUNK // 10], now)
            await conn.execute(insert(events).on_conflict_do_nothing(index_elements=["id"]), rows)
        await conn.execute(
            unrecognised.update()
            .where(unrecognised.c.id == delivery_id)
            .values(
                state=REPROCESSED,
                handled_at=now,
                attempts=unrecognised.c.attempts + 1,
                event_ids=[e.id for e in made],
            )
        )


async def purge(inbox: Inbox, older_than: timedelta) -> int:
    """Forget deliveries reprocessed more than ``older_than`` ago (never a waiting one)."""
    cutoff = datetime.now(UTC) - older_than
    async with inbox.write_engine.begin() as conn:
        result = await conn.execute(
            unrecognised.delete().where(
                unrecognised.c.state == REPROCESSED, unrecognised.c.handled_at < cutoff
            )
        )
    return int(result.rowcount or 0)
