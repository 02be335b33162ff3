"""The durable inbox: where an accepted event waits until every matching zap has run on it.

``Inbox`` puts its parts together, each a module of its own: ``db`` (tables, engines,
migrations, ``InboxBase``), ``event_queue`` (accepting, claiming, leases, heartbeats), ``ledger``
(the run ledger, step checkpoints, zap versions), ``tokens`` (hook tokens, shared API rate
counts) and ``members`` (who shares the inbox, in which role; single-holder jobs); this module
opens, purges and closes it.

The receiver acknowledges a delivery only after :meth:`Inbox.put` returns, and ``put`` returns
only after the event is committed, so an acknowledged event survives a crash or a power cut.
Under load, concurrent ``put`` calls are group-committed: one writer task writes whatever has
queued up in one transaction, so a burst costs a few fsyncs rather than one per event.

Dispatchers :meth:`~Inbox.claim` committed events under a lease, run the matching zaps, and mark
them :meth:`~Inbox.done` (or :meth:`~Inbox.release` them to try later). A dispatcher that dies
simply stops renewing its lease; another one reclaims the events when it expires. The
``(event, zap)`` run ledger (:meth:`~Inbox.start_run` / :meth:`~Inbox.finish_run`) is what keeps a
reclaimed event from running a zap a second time.

Storage is SQLAlchemy 2 async: by default a SQLite file ``inbox.db`` in the state folder
(``$ZAPFLOW_HOME`` or ``./.zapflow``) in WAL mode with ``synchronous=FULL``; PostgreSQL
(``postgresql+asyncpg://...``) when several processes or machines share one inbox. The schema is
owned by the Alembic migrations next to this module and is brought up to date on open.

Tables (prefixed ``zapflow_`` so the inbox can share a database, even a schema, with Prefect's
own server, which has an ``events`` table and an ``alembic_version`` table of its own):

``zapflow_events`` — one row per distinct event.
    ``seq`` (autoincrement primary key: arrival order), ``id`` (unique: the de-duplication key),
    ``app``, ``trigger``, ``connection``, ``zap`` (set when the event is for that zap only),
    ``payload`` (JSON; JSONB on PostgreSQL), ``received_at``, ``state`` (``pending`` → ``claimed``
    → ``done``, or ``parked`` while each of its runs is finished or waiting in a delay),
    ``claimed_by`` (the worker, while claimed), ``available_at`` (when the event may next be
    claimed: on arrival, when a release's delay ends, when its earliest parked run is due, or —
    while it is claimed — when the lease ends), ``attempts`` (times claimed), ``done_at``. One
    partial index on ``seq`` over the claimable events (pending or claimed) serves claiming, one
    on ``available_at`` over the parked ones wakes them when due; ``(state, done_at)`` serves
    purging.
``zapflow_runs`` — the ledger of zap runs, primary key ``(event_id, zap)``.
    ``state`` (``running``; then how it ended — ``completed``, ``filtered``, ``failed``,
    ``cancelled`` …, all final — or ``abandoned``: it did not run and may be started again,
    ``waiting``: parked in a delay until ``resume_at``, ``queued``: waiting for a slot of its
    zap's ``concurrency`` or ``rate_limit``, ``held`` by flood protection), ``flow_run_id``
    (the Prefect flow run that recorded it), ``started_at``, ``finished_at``, ``failing_step``
    and ``message`` (why it failed or was filtered), ``worker`` (the dispatcher running it:
    ``host:pid:start``), ``resume_at`` (kept after the run went on). Indexed by ``started_at``
    for ``zapflow runs``, by ``resume_at`` over the waiting runs for ``zapflow runs
    --waiting``, and by ``(zap, state, started_at)`` for the limits that count a zap's running
    and recent runs.
``zapflow_steps`` — step checkpoints (``flows.intake.checkpoints``), primary key
    ``(event_id, zap, step)``: ``status`` (``completed``, ``skipped``, or ``waiting``: the delay
    step a parked run waits in, its ``output`` holding the resume time), ``output`` (JSON),
    ``finished_at``.
``zapflow_workers`` — heartbeats of the serve processes sharing the inbox: ``worker``
    (``host:pid:start``), ``host``, ``role`` (``all``, ``receiver``, ``worker``), ``started_at``,
    ``seen_at``.
``zapflow_leases`` — jobs only one process may do at a time (``flows.intake.members``): ``name``
    (primary key, e.g. ``poller:<zap>``), ``holder`` (a worker), ``expires_at``.
``zapflow_zap_versions`` — each version of each zap that ran, once: ``version`` (primary key:
    a hash of the zap's content, as ``zapflow_runs.zap_version`` and the Prefect flow run's
    version say), ``zap``, ``definition`` (JSON), ``git_revision`` (of the zap folder, when it
    is in git), ``first_seen``. ``zapflow replay --zap-version recorded`` reads it.
``zapflow_rate_use`` — the calls an app account made under its API rate limit
    (``connectors._rates``): ``seq``, ``key`` (the account), ``at``; rows older than the
    limit's period are deleted as calls are counted. Indexed by ``(key, at)``.
``zapflow_hook_tokens`` — primary key ``(kind, name)``, ``token`` (unique), ``created_at``.
``zapflow_poll_state`` — one row per polling or schedule trigger (``flows.intake.pollers``),
    primary key ``poller`` (the zap id). ``fingerprint`` (of the trigger settings the row is
    for: changed settings start afresh), ``cursor`` (JSON: where the next poll starts; for a
    schedule, the last moment fired), ``last_polled_at`` (last successful poll; NULL until the
    first), ``last_error``, ``last_error_at`` and ``failures`` (consecutive failed polls).
``zapflow_poll_seen`` — the items a poller has seen, primary key ``(poller, key)`` (the key is
    a hash of the item's dedupe key), ``seen_at`` (when a poll last returned it; keys not seen
    for a while are forgotten). Indexed by ``(poller, seen_at)``.
``zapflow_storage`` — what zaps keep between runs (``connectors.storage``), primary key
    ``(namespace, key)``; ``value`` (JSON; JSONB on PostgreSQL), ``updated_at``.
``zapflow_unrecognised`` — deliveries from an authenticated sender that its app could not read
    yet (``flows.intake.unrecognised``): ``seq``, ``id`` (unique), ``app``, ``connection``,
    ``channel`` (the hook URL's last segment), ``body`` (JSON, as delivered), ``reason``,
    ``received_at``, ``state`` (``waiting`` until reprocessed into events, then
    ``reprocessed``), ``attempts`` (reprocessing tries), ``handled_at`` and ``event_ids`` (JSON:
    the events reprocessing made). Retention purges only reprocessed ones. Indexed by
    ``(state, seq)``.
``zapflow_inbox_version`` — Alembic's version table.

All times are UTC and come from the clock of the process calling the inbox, so machines that
share a PostgreSQL inbox need synchronised clocks (NTP) for leases to mean the same to all.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import sqlalchemy as sa

from flows.intake.db import (
    _SCHEMA_NAME,
    _STOP,
    CHUNK,
    CLAIMED,
    DONE,
    PARKED,
    PENDING,
    InboxError,
    _migrate,
    _now,
    default_url,
    events,
    make_engine,
    runs,
    steps,
    workers,
)
from flows.intake.event_queue import EventQueue
from flows.intake.members import Members
from flows.intake.tokens import HookTokens


class Inbox(EventQueue, HookTokens, Members):
    """A durable, de-duplicating event store shared by receivers and dispatchers.

    Open with ``await Inbox.open(url)``; close with ``await inbox.close()`` (or ``async with``).
    One instance serves a whole process: its writer task group-commits every ``put``.
    """

    @classmethod
    async def open(
        cls,
        url: str | None = None,
        *,
        batch_max: int = 500,
        batch_wait: float = 0.002,
        schema: str | None = None,
        checkpoints: bool = True,
        migrate: bool = True,
    ) -> Inbox:
        """Open (creating or upgrading as needed) the inbox at ``url``, or the default one.

        ``schema`` (PostgreSQL only) keeps the inbox's tables in that schema, created if
        missing. ``batch_max`` and ``batch_wait`` tune group commit: at most that many events
        per transaction, and how long the writer waits for company once one event is waiting.
        ``checkpoints=False`` (SQLite): this process's commits never fold the write-ahead log
        into the database file, so they never wait for it; another process must (the
        dispatcher's inbox does, with the default). ``migrate=False``: the schema is known to
        be current (another process of this zapflow opened it first).
        """
        if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
            raise InboxError(f"not a plain schema name: {schema!r}")
        engine = make_engine(url or default_url(), schema, checkpoints=checkpoints)
        applied: tuple[str, ...] = ()
        try:
            if migrate:
                async with engine.execution_options(zapflow_write=True).begin() as conn:
                    applied = await conn.run_sync(_migrate, schema)
        except BaseException:
            await engine.dispose()
            raise
        inbox = cls(engine, batch_max=batch_max, batch_wait=batch_wait, applied_migrations=applied)
        inbox._writer = asyncio.create_task(inbox._write_loop(), name="zapflow-inbox-writer")
        return inbox

    async def __aenter__(self) -> Inbox:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Write every put already made, then release the database."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            await self._queue.put(_STOP)
            await self._writer
        await self._engine.dispose()

    # -- retention, tokens, health ---------------------------------------------------------

    async def purge(self, older_than: timedelta) -> int:
        """Delete events done more than ``older_than`` ago, with their ledger rows (and the
        heartbeats of dispatchers silent as long).

        Returns how many events were deleted. Works in chunks, so a large purge never holds
        SQLite's write lock for long. A purged event's id is forgotten: keep processed events
        longer than any sender might redeliver one, or the redelivery runs again.
        """
        cutoff = _now() - older_than
        total = 0
        while True:
            async with self._write_engine.begin() as conn:
                rows = (
                    await conn.execute(
                        sa.select(events.c.seq, events.c.id)
                        .where(events.c.state == DONE, events.c.done_at < cutoff)
                        .limit(CHUNK)
                    )
                ).all()
                if rows:
                    ids = [r.id for r in rows]
                    await conn.execute(steps.delete().where(steps.c.event_id.in_(ids)))
                    await conn.execute(runs.delete().where(runs.c.event_id.in_(ids)))
                    await conn.execute(
                        events.delete().where(events.c.seq.in_([r.seq for r in rows]))
                    )
            total += len(rows)
            if len(rows) < CHUNK:
                break
        async with self._write_engine.begin() as conn:  # dispatchers long gone
            await conn.execute(workers.delete().where(workers.c.seen_at < cutoff))
        return total

    async def counts(self) -> dict[str, int]:
        """How many events are pending, claimed and done."""
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(events.c.state, sa.func.count().label("n")).group_by(events.c.state)
                )
            ).all()
        found = {row.state: row.n for row in rows}
        return {state: found.get(state, 0) for state in (PENDING, CLAIMED, PARKED, DONE)}
