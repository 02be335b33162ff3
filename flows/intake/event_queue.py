"""The event queue: accepting events (group-committed puts), claiming them for dispatchers
(with flood holds and concurrency/rate gates), leases, heartbeats and release."""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from flows.events import Event, check_depth
from flows.intake.db import (
    _STOP,
    ABANDONED,
    CHUNK,
    CLAIMABLE,
    CLAIMED,
    DISCARDED,
    EVENTS_CHANNEL,
    HELD,
    PARKED_ONLY,
    PENDING,
    QUEUED,
    QUEUED_ONLY,
    RUNNING,
    Gate,
    InboxError,
    LedgerRun,
    _chunks,
    _now,
    _Put,
    _row_specific,
    _startable,
    _stored,
    events,
    runs,
    unpark,
    workers,
)
from flows.intake.ledger import RunLedger


class Listening:
    """A connection listening for new events (``EventQueue.listen``); ``lost`` is set when it
    ends (the database restarted or dropped it): listen again."""

    def __init__(self, conn: AsyncConnection, driver: Any, channel: str) -> None:
        self._conn, self._driver, self.channel = conn, driver, channel
        self.lost = asyncio.Event()

    def heard(self, on_new: Callable[[], None]) -> Callable[..., None]:
        self._callback: Callable[..., None] = lambda *_: on_new()
        return self._callback

    def ended(self, *_: Any) -> None:
        self.lost.set()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._driver.remove_listener(self.channel, self._callback)
        with contextlib.suppress(Exception):
            await self._conn.close()
        self.lost.set()


class EventQueue(RunLedger):
    """The inbox's queue of events, claimed by dispatchers."""

    # -- accepting events ------------------------------------------------------------------

    async def put(self, event: Event) -> bool:
        """Store an event; return once it is committed: True if new, False if a duplicate.

        Raises the database's error if the commit failed: the event must then not be
        acknowledged (the sender will deliver it again).
        """
        self._check_open()
        check_depth(event.payload)  # TooDeep: what cannot be recorded is not accepted
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Put(event, future))
        return await future

    async def put_many(self, events: list[Event]) -> list[bool]:
        """Store several events (committed together when they fit one batch), in order."""
        self._check_open()
        for event in events:
            check_depth(event.payload)
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[bool]] = []
        for event in events:
            future: asyncio.Future[bool] = loop.create_future()
            self._queue.put_nowait(_Put(event, future))
            futures.append(future)
        return list(await asyncio.gather(*futures))

    def _check_open(self) -> None:
        if self._closed:
            raise InboxError("the inbox is closed")
        if self._writer is None or self._writer.done():
            # Only a bug (or the loop shutting down) ends the writer; fail rather than hang.
            raise InboxError("the inbox's writer is not running")

    async def wait_for_events(self, timeout: float) -> bool:
        """Wait until a put in this process committed a new event, or ``timeout`` passes.

        Lets a dispatcher in the same process start on an event at once instead of polling;
        events put by other processes are only seen by claiming, so keep the timeout short.
        Returns whether new events arrived.
        """
        try:
            await asyncio.wait_for(self._arrived.wait(), timeout)
        except TimeoutError:
            return False
        self._arrived.clear()
        return True

    async def _write_loop(self) -> None:
        """The one writer: take what is queued (waiting briefly for more), commit it at once."""
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is _STOP:
                break
            assert isinstance(first, _Put)
            batch = [first]
            deadline = loop.time() + self._batch_wait
            while len(batch) < self._batch_max:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self._queue.get(), remaining)
                    except TimeoutError:
                        break
                if item is _STOP:
                    stopping = True
                    break
                assert isinstance(item, _Put)
                batch.append(item)
            await self._write(batch)

    async def listen(self, on_new: Callable[[], None]) -> Listening | None:
        """On PostgreSQL, call ``on_new`` whenever any process sharing the inbox commits new
        events (a notification: workers on other machines claim at once instead of at their next
        idle poll). None on SQLite, whose writers all share one machine."""
        if not self._is_postgresql:
            return None
        conn = await self._engine.connect()
        try:
            raw = await conn.get_raw_connection()
            driver: Any = raw.driver_connection
            channel = EVENTS_CHANNEL + str(await driver.fetchval("SELECT current_schema()"))
            listening = Listening(conn, driver, channel)
            await driver.add_listener(channel, listening.heard(on_new))
            driver.add_termination_listener(listening.ended)
        except BaseException:
            await conn.close()
            raise
        return listening

    async def _write(self, batch: list[_Put]) -> None:
        """Commit one batch and settle its callers' futures (never raises)."""
        # The same id twice in one batch: the first decides, the others are duplicates of it.
        firsts: dict[str, _Put] = {}
        for item in batch:
            firsts.setdefault(item.event.id, item)
        try:
            new_ids = await self._insert(list(firsts.values()))
        except Exception as exc:
            if len(firsts) > 1 and _row_specific(exc):
                # One bad event must not fail its neighbours: write each on its own.
                for item in batch:
                    await self._write([item])
                return
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        self.stats.commits += 1
        self.stats.events += len(batch)
        self.stats.new += len(new_ids)
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        for item in batch:
            if not item.future.done():
                is_new = item is firsts[item.event.id] and item.event.id in new_ids
                item.future.set_result(is_new)
        if new_ids:
            self._arrived.set()

    async def _insert(self, items: list[_Put]) -> set[str]:
        async with self._write_engine.begin() as conn:
            return await self._insert_events(conn, [item.event for item in items])

    # -- dispatching -----------------------------------------------------------------------

    async def claim(self, worker: str, *, limit: int = 100, lease: float = 60.0) -> list[Event]:
        """Take up to ``limit`` waiting events, oldest first, for ``lease`` seconds.

        Waiting means pending (and past any release delay), or claimed under a lease that has
        expired because its worker died or stalled. Each claimed event's ``attempts`` counts
        this claim. Concurrent claimers never get the same event.
        """
        async with self._write_engine.begin() as conn:
            return await self._claim(conn, worker, limit=limit, lease=lease)

    async def _claim(
        self, conn: AsyncConnection, worker: str, *, limit: int, lease: float
    ) -> list[Event]:
        if limit < 1:
            return []
        now = _now()
        await self._wake_parked(conn, now)
        # A pending event's available_at is when it may be taken; a claimed one's is the end of
        # its lease. So one condition covers both, and it walks the partial index of claimable
        # events in seq order, stopping after `limit` rows. The condition is literal text (no
        # bound parameters) so that SQLite and PostgreSQL match that index's WHERE clause.
        picked = (
            sa.select(events.c.seq)
            .where(sa.text(CLAIMABLE), events.c.available_at <= now)
            .order_by(events.c.seq)
            .limit(limit)
        )
        values = {
            "state": CLAIMED,
            "claimed_by": worker,
            "available_at": now + timedelta(seconds=lease),
            "attempts": events.c.attempts + 1,
        }
        if self._is_postgresql:
            # Rows another dispatcher is claiming right now are skipped, not waited for. The
            # materialised CTE runs the locking SELECT exactly once (a subquery the planner
            # re-scans could lock and take more than `limit` rows).
            cte = picked.with_for_update(skip_locked=True).cte("picked").prefix_with("MATERIALIZED")
            stmt = events.update().where(events.c.seq == cte.c.seq)
        else:
            # SQLite: the write transaction (BEGIN IMMEDIATE) already excludes other claimers.
            stmt = events.update().where(events.c.seq.in_(picked.scalar_subquery()))
        stmt = stmt.values(values).returning(*events.c)
        rows = (await conn.execute(stmt)).all()
        return sorted((_stored(row) for row in rows), key=lambda e: e.seq)

    async def _wake_parked(self, conn: AsyncConnection, now: datetime) -> None:
        """Parked events whose resume time has come become claimable (their own index finds
        them: a claim costs nothing more however many runs are parked)."""
        # The literal condition (not a bound parameter) lets SQLite use the partial index.
        await conn.execute(
            events.update()
            .where(sa.text(PARKED_ONLY), events.c.available_at <= now)
            .values(state=PENDING)
        )

    async def next_resume(self) -> datetime | None:
        """When the earliest parked event is due (None when nothing is parked)."""
        async with self._engine.connect() as conn:
            return (
                await conn.execute(
                    sa.select(sa.func.min(events.c.available_at)).where(sa.text(PARKED_ONLY))
                )
            ).scalar_one_or_none()

    async def claim_and_start(
        self,
        worker: str,
        zaps_of: Callable[[Event], list[str]],
        *,
        limit: int = 100,
        lease: float = 60.0,
        stale_after: float = 600.0,
        floods: dict[str, tuple[int, float]] | None = None,
        gates: dict[str, Gate] | None = None,
    ) -> tuple[list[Event], dict[tuple[str, str], str]]:
        """:meth:`claim` and :meth:`start_runs` for the claimed events' zaps (``zaps_of``), in
        one transaction: a dispatcher's event waits for one commit before its runs start, not
        two. ``floods``: zap → (max runs, per seconds); a new run beyond its zap's limit is
        entered ``held`` instead (flood protection), to be released or discarded by hand.
        ``gates``: zap → its concurrency and rate limit; a run beyond them is entered
        ``queued`` and starts, oldest first, when a slot frees up."""
        async with self._write_engine.begin() as conn:
            if gates:
                await self._wake_queued(conn, gates)
            claimed = await self._claim(conn, worker, limit=limit, lease=lease)
            pairs = [(event.id, zap) for event in claimed for zap in zaps_of(event)]
            if floods:
                await self._hold_floods(conn, pairs, floods)
            queued: set[tuple[str, str]] = set()
            if gates:
                queued = await self._gate(conn, pairs, gates)
                pairs = [p for p in pairs if p not in queued]
            started = await self._start_runs(conn, pairs, worker, stale_after, ())
        started.update(dict.fromkeys(queued, QUEUED))
        return claimed, started

    async def _room(self, conn: AsyncConnection, zap: str, gate: Gate, now: datetime) -> int:
        """How many more runs of ``zap`` may start now under its gate."""
        room = 1 << 30
        if gate.concurrency is not None:
            running = await conn.execute(
                sa.select(sa.func.count())
                .select_from(runs)
                .where(runs.c.zap == zap, runs.c.state == RUNNING)
            )
            room = gate.concurrency - int(running.scalar_one())
        if gate.rate is not None:
            recent = await conn.execute(
                sa.select(sa.func.count())
                .select_from(runs)
                .where(
                    runs.c.zap == zap,
                    runs.c.state.not_in([HELD, DISCARDED, QUEUED]),
                    runs.c.started_at > now - timedelta(seconds=gate.rate.per),
                )
            )
            room = min(room, gate.rate.count - int(recent.scalar_one()))
        return max(0, room)

    async def _wake_queued(self, conn: AsyncConnection, gates: dict[str, Gate]) -> None:
        """The events of the oldest queued runs of each gated zap that has a free slot become
        claimable now (the claim that follows, in seq order, takes them)."""
        now = _now()
        waiting = await conn.execute(
            sa.select(runs.c.zap)
            .where(sa.text(QUEUED_ONLY), runs.c.zap.in_(list(gates)))
            .group_by(runs.c.zap)
        )
        for zap in [row.zap for row in waiting.all()]:
            room = await self._room(conn, zap, gates[zap], now)
            if not room:
                continue
            oldest = (
                sa.select(runs.c.event_id)
                .where(sa.text(QUEUED_ONLY), runs.c.zap == zap)
                .order_by(runs.c.started_at, runs.c.event_id)
                .limit(min(room, CHUNK))
            )
            await conn.execute(unpark(oldest.scalar_subquery(), now))

    async def wake_ungated(self, gated: Iterable[str]) -> int:
        """Queued runs of zaps no longer gated (their limit was taken out of the zap file)
        start: their events become claimable now. Returns how many events."""
        now = _now()
        async with self._write_engine.begin() as conn:
            ids = (
                sa.select(runs.c.event_id)
                .where(sa.text(QUEUED_ONLY), runs.c.zap.not_in(list(gated)))
                .limit(CHUNK)
            )
            woken = await conn.execute(unpark(ids.scalar_subquery(), now))
        return woken.rowcount or 0

    async def _gate(
        self, conn: AsyncConnection, pairs: Sequence[tuple[str, str]], gates: dict[str, Gate]
    ) -> set[tuple[str, str]]:
        """Enter as ``queued`` the runs about to start beyond their zap's concurrency or rate
        limit (runs queued before go first); returns them."""
        now = _now()
        insert = postgresql.insert if self._is_postgresql else sqlite.insert
        kept: set[tuple[str, str]] = set()
        for zap in sorted(gates):  # in one order: two PostgreSQL dispatchers never deadlock
            mine = [p for p in dict.fromkeys(pairs) if p[1] == zap][: CHUNK // 2]
            if not mine:
                continue
            if self._is_postgresql:  # one dispatcher counts and starts this zap's runs at once
                await conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"),
                    {"key": zlib.crc32(f"zapflow.gate:{zap}".encode())},
                )
            rows = await conn.execute(
                sa.select(runs.c.event_id, runs.c.state, runs.c.resume_at, runs.c.started_at).where(
                    runs.c.zap == zap, runs.c.event_id.in_([e for e, _ in mine])
                )
            )
            known = {row.event_id: row for row in rows.all()}

            candidates = [p for p in mine if _startable(known.get(p[0]), now)]
            # Runs queued (or started) before come first, then new ones in claim order.
            candidates.sort(
                key=lambda p: (p[0] not in known, known[p[0]].started_at if p[0] in known else now)
            )
            gate = gates[zap]
            over = candidates[await self._room(conn, zap, gate, now) :]
            if not over:
                continue
            why = gate.describe()
            stmt = insert(runs).values(
                [
                    {"event_id": e, "zap": z, "state": QUEUED, "started_at": now, "message": why}
                    for e, z in over
                ]
            )
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["event_id", "zap"],
                    set_={"state": QUEUED, "message": why, "worker": None},
                )
            )
            kept.update(over)
        return kept

    async def _hold_floods(
        self,
        conn: AsyncConnection,
        pairs: Sequence[tuple[str, str]],
        floods: dict[str, tuple[int, float]],
    ) -> None:
        """Enter as ``held`` the new runs of a zap beyond its flood limit: more runs started
        in the last ``per`` seconds than ``max`` (held and discarded ones do not count)."""
        now = _now()
        insert = postgresql.insert if self._is_postgresql else sqlite.insert
        for zap, (most, per) in floods.items():
            mine = [p for p in dict.fromkeys(pairs) if p[1] == zap]
            if not mine:
                continue
            known = await conn.execute(
                sa.select(runs.c.event_id).where(
                    runs.c.zap == zap, runs.c.event_id.in_([e for e, _ in mine][:CHUNK])
                )
            )
            seen = {row.event_id for row in known.all()}
            fresh = [p for p in mine if p[0] not in seen]
            if not fresh:
                continue
            recent = await conn.execute(
                sa.select(sa.func.count())
                .select_from(runs)
                .where(
                    runs.c.zap == zap,
                    runs.c.started_at >= now - timedelta(seconds=per),
                    runs.c.state.not_in([HELD, DISCARDED]),
                )
            )
            room = max(0, most - int(recent.scalar_one()))
            over = fresh[room:]
            if over:
                await conn.execute(
                    insert(runs)
                    .values(
                        [
                            {
                                "event_id": e,
                                "zap": z,
                                "state": HELD,
                                "started_at": now,
                                "message": f"held: more than {most} runs in {per:g} s",
                            }
                            for e, z in over
                        ]
                    )
                    .on_conflict_do_nothing(index_elements=["event_id", "zap"])
                )

    async def held_runs(self, zap: str | None = None, limit: int = 1000) -> list[LedgerRun]:
        """Runs held by flood protection, oldest first."""
        found = await self.recent_runs(limit=100_000, zap=zap, state=HELD)
        return list(reversed(found))[:limit]

    async def let_go(
        self, action: str, *, zap: str | None = None, event_ids: Sequence[str] = ()
    ) -> int:
        """Release (``release``: they run) or discard (``discard``: they never run) held runs
        of ``zap`` and/or ``event_ids`` (all held runs when neither is given). Returns how
        many."""
        now = _now()
        where = [runs.c.state == HELD]
        if zap is not None:
            where.append(runs.c.zap == zap)
        if event_ids:
            where.append(runs.c.event_id.in_(list(event_ids)[:CHUNK]))
        async with self._write_engine.begin() as conn:
            picked = await conn.execute(
                runs.update()
                .where(*where)
                .values(
                    state=ABANDONED if action == "release" else DISCARDED,
                    finished_at=now,
                    message=f"{action}d by zapflow {action}",
                )
                .returning(runs.c.event_id)
            )
            ids = sorted({row.event_id for row in picked.all()})
            for start in range(0, len(ids), CHUNK):
                # Claimable now: released runs start, discarded ones end.
                await conn.execute(unpark(ids[start : start + CHUNK], now))
        return len(ids)

    async def extend(self, worker: str, seqs: list[int], lease: float) -> None:
        """Renew ``worker``'s lease on these events for ``lease`` more seconds from now.

        Events no longer claimed by ``worker`` (its lease expired and another took them) are
        left alone.
        """
        until = _now() + timedelta(seconds=lease)
        async with self._write_engine.begin() as conn:
            for chunk in _chunks(seqs):
                await conn.execute(
                    events.update()
                    .where(
                        events.c.seq.in_(chunk),
                        events.c.state == CLAIMED,
                        events.c.claimed_by == worker,
                    )
                    .values(available_at=until)
                )

    # -- dispatchers' heartbeats ------------------------------------------------------------

    async def heartbeat(
        self,
        worker: str,
        host: str,
        seqs: Sequence[int] = (),
        lease: float = 120.0,
        role: str = "all",
    ) -> None:
        """``worker`` (a serve process in ``role``) is alive: note it, and extend its leases on
        the events in ``seqs`` (those it is still running), so nobody takes them while it works
        on them."""
        now = _now()
        insert = postgresql.insert if self._is_postgresql else sqlite.insert
        async with self._write_engine.begin() as conn:
            await conn.execute(
                insert(workers)
                .values(worker=worker, host=host, started_at=now, seen_at=now, role=role)
                .on_conflict_do_update(
                    index_elements=["worker"], set_={"seen_at": now, "role": role}
                )
            )
            until = now + timedelta(seconds=lease)
            for chunk in _chunks(list(seqs)):
                await conn.execute(
                    events.update()
                    .where(
                        events.c.seq.in_(chunk),
                        events.c.state == CLAIMED,
                        events.c.claimed_by == worker,
                    )
                    .values(available_at=until)
                )

    async def sign_off(self, worker: str) -> None:
        """``worker`` stops (gracefully): it holds nothing any more."""
        async with self._write_engine.begin() as conn:
            await conn.execute(workers.delete().where(workers.c.worker == worker))

    async def silent_workers(self, candidates: Iterable[str], silent_for: float) -> set[str]:
        """Those of ``candidates`` whose heartbeat stopped more than ``silent_for`` seconds
        ago (a worker with no heartbeat row at all is not judged here)."""
        wanted = list(candidates)
        if not wanted:
            return set()
        since = _now() - timedelta(seconds=silent_for)
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                sa.select(workers.c.worker).where(
                    workers.c.worker.in_(wanted[:CHUNK]), workers.c.seen_at < since
                )
            )
            return {str(w) for (w,) in rows.all()}

    async def claiming_workers(self) -> set[str]:
        """The workers holding claimed events (leases expired or not)."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                sa.select(events.c.claimed_by)
                .where(events.c.state == CLAIMED, events.c.claimed_by.is_not(None))
                .distinct()
            )
            return {str(w) for (w,) in rows.all() if w}

    async def release_worker(self, worker: str) -> int:
        """Give back every event ``worker`` holds, at once: for a worker known to be dead
        (rather than waiting for its leases to expire). Returns how many."""
        async with self._write_engine.begin() as conn:
            result = await conn.execute(
                events.update()
                .where(events.c.state == CLAIMED, events.c.claimed_by == worker)
                .values(state=PENDING, available_at=_now(), claimed_by=None)
            )
            return int(result.rowcount or 0)

    async def done(self, seqs: list[int]) -> None:
        """Mark events processed: every matching zap ran (or was found to have run)."""
        await self.finish_runs((), seqs)

    async def release(self, seqs: list[int], *, delay: float = 0.0) -> None:
        """Give claimed events back, to be claimed again no sooner than ``delay`` seconds.

        For when they cannot be processed now (e.g. Prefect's server is down): they wait in
        the inbox and drain when it returns.
        """
        available = _now() + timedelta(seconds=delay)
        async with self._write_engine.begin() as conn:
            for chunk in _chunks(seqs):
                await conn.execute(
                    events.update()
                    .where(events.c.seq.in_(chunk), events.c.state == CLAIMED)
                    .values(state=PENDING, available_at=available, claimed_by=None)
                )

    async def hurry(self) -> int:
        """Make every waiting event claimable now (those given back with a delay while Prefect
        was down, which would otherwise trickle back one delay at a time). Returns how many."""
        now = _now()
        async with self._write_engine.begin() as conn:
            result = await conn.execute(
                events.update()
                .where(events.c.state == PENDING, events.c.available_at > now)
                .values(available_at=now)
            )
            return int(result.rowcount or 0)

    async def get(self, event_id: str) -> Event | None:
        """The stored event with this id (in any state), e.g. to replay it."""
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(events).where(events.c.id == event_id))).first()
        return _stored(row) if row is not None else None
