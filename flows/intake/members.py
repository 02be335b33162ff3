"""Who shares the inbox, and the jobs only one of them may do at a time.

Every ``zapflow serve`` process notes itself in ``zapflow_workers`` with its role (``all``,
``receiver`` or ``worker``) and a heartbeat (``zapflow status`` lists them). A job that must run
in exactly one place — each poller and schedule — is held under a lease in ``zapflow_leases``:
its holder renews it while alive; when the holder dies, the lease expires and the next worker
to ask takes it (``take_leases``); a holder that stops gracefully lets its leases go at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from flows.intake.db import CHUNK, InboxBase, _now, leases, workers

ROLES = ("all", "receiver", "worker")
"""What a serve process does: everything (one machine), only accept deliveries into the inbox,
or only run zaps (dispatcher, pollers, schedules) from it."""


@dataclass(frozen=True)
class Member:
    """One process sharing the inbox, as its last heartbeat said."""

    worker: str
    """``host:pid:start``."""
    host: str
    role: str
    started_at: datetime
    seen_at: datetime
    leases: tuple[str, ...] = ()
    """The single-holder jobs it holds (``poller:<zap>``)."""


class Members(InboxBase):
    """Heartbeats with roles, and leases on single-holder jobs."""

    async def take_leases(self, holder: str, names: Sequence[str], seconds: float) -> set[str]:
        """Hold each of ``names`` for ``seconds`` from now where it is free, expired or held by
        ``holder`` already; let go of the ones ``holder`` holds and no longer names. Returns
        the names ``holder`` holds now (another live holder keeps the rest)."""
        now = _now()
        until = now + timedelta(seconds=seconds)
        wanted = sorted(set(names))
        insert = postgresql.insert if self._is_postgresql else sqlite.insert
        held: set[str] = set()
        async with self._write_engine.begin() as conn:
            gone = leases.delete().where(leases.c.holder == holder)
            if wanted:
                gone = gone.where(leases.c.name.not_in(wanted[:CHUNK]))
            await conn.execute(gone)
            for start in range(0, len(wanted), CHUNK):
                chunk = wanted[start : start + CHUNK]
                stmt = insert(leases).values(
                    [{"name": name, "holder": holder, "expires_at": until} for name in chunk]
                )
                taken = stmt.on_conflict_do_update(
                    index_elements=["name"],
                    set_={"holder": stmt.excluded.holder, "expires_at": stmt.excluded.expires_at},
                    where=sa.or_(leases.c.expires_at < now, leases.c.holder == holder),
                ).returning(leases.c.name)
                held.update((await conn.execute(taken)).scalars().all())
        return held

    async def drop_leases(self, holder: str) -> None:
        """``holder`` stops: its jobs may be taken by another at once."""
        async with self._write_engine.begin() as conn:
            await conn.execute(leases.delete().where(leases.c.holder == holder))

    async def members(self) -> list[Member]:
        """Every process that has a heartbeat row, by role and host, with its leases."""
        async with self._engine.connect() as conn:
            rows = (await conn.execute(sa.select(workers))).all()
            held = (
                await conn.execute(
                    sa.select(leases.c.holder, leases.c.name).where(leases.c.expires_at >= _now())
                )
            ).all()
        by_holder: dict[str, list[str]] = {}
        for row in held:
            by_holder.setdefault(str(row.holder), []).append(str(row.name))
        found = [
            Member(
                row.worker,
                row.host,
                row.role,
                row.started_at,
                row.seen_at,
                tuple(sorted(by_holder.get(row.worker, []))),
            )
            for row in rows
        ]
        return sorted(found, key=lambda m: (ROLES.index(m.role) if m.role in ROLES else 9, m.host))
