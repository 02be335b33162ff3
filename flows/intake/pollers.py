"""Polling triggers and schedules: how events get in from apps that do not call back.

**Polling.** A polling trigger's function is called every ``options.interval`` (else the
trigger's own interval; never more often than ``min_interval``). Each item it returns whose
dedupe key was not seen before becomes an event for the zap, with an id derived from (zap, key):
an overlapping poll, a restart or a second process sharing the inbox stores it once. The cursor
moves, and the keys are noted as seen, only after those events are committed, so a crash in
between loses nothing: the next poll starts from the old cursor and the inbox drops what it
already has. The first poll of a zap only notes the items already there (``skip_existing``,
like Zapier), so a new zap does not run on the source's whole history. Keys a poll has not
returned for ``SEEN_FOR`` are forgotten.

**Schedules.** A schedule trigger fires at each moment of its cron expression, as an event whose
id is derived from (zap, moment): two processes, or a restart, never fire a moment twice.
Moments missed while nothing ran fire once, the latest of them; a new schedule (or a changed
one) fires from now on. Prefect's scheduler is not used: its ephemeral server, the embedded
default, runs no scheduler service.

**One place at a time.** Under ``zapflow serve`` each zap's poller or schedule is held under a
lease in the inbox (``flows.intake.members``): of all the workers sharing the inbox, only the
holder polls; it renews the lease every ``LEASE_SECONDS / 3``, and when it dies the lease
expires and another worker takes the zap over (from the stored cursor), within
``LEASE_SECONDS`` and a renewal. A worker that stops gracefully lets its leases go at once.

Either way a failure (the app, the network, the inbox) is recorded in ``zapflow_poll_state``
and retried with a growing pause; it never ends the loop. :class:`Pollers` runs one task per
zap and follows the zap folder through :meth:`Pollers.update`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from cronsim import CronSim
from sqlalchemy.dialects import postgresql, sqlite

from connectors import registry
from connectors._contract import PollingOptions, Trigger
from connectors._errors import AuthError, ZapError
from flows import connections
from flows.events import Event, derived_id
from flows.intake.db import CHUNK, poll_seen, poll_state
from flows.intake.inbox import Inbox
from flows.model import Zap

log = logging.getLogger("zapflow.pollers")

MIN_INTERVAL = 1.0
MAX_BACKOFF = 900.0
SEEN_FOR = timedelta(days=30)
STOP_GRACE = 5.0
LEASE_SECONDS = 30.0
"""How long a worker holds a zap's poller or schedule without renewing it (it renews every
third of that): after a worker dies, another takes its pollers over within about this long."""
Clock = Callable[[], datetime]


def lease_name(zap_id: str) -> str:
    return f"poller:{zap_id}"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _digest(value: Any, size: int = 32) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:size]


# --------------------------------------------------------------------------- state


@dataclass(frozen=True)
class PollState:
    fingerprint: str
    cursor: dict[str, Any] | None = None
    last_polled_at: datetime | None = None
    """The last successful poll; None until the first."""
    failures: int = 0
    last_error: str | None = None
    last_error_at: datetime | None = None


class PollStore:
    """The pollers' rows in the inbox's database (``zapflow_poll_state``, ``zapflow_poll_seen``)."""

    def __init__(self, inbox: Inbox) -> None:
        self._read, self._write = inbox.engine, inbox.write_engine
        is_pg = self._read.dialect.name == "postgresql"
        self._insert = postgresql.insert if is_pg else sqlite.insert

    async def get(self, poller: str) -> PollState | None:
        async with self._read.connect() as conn:
            row = (
                await conn.execute(sa.select(poll_state).where(poll_state.c.poller == poller))
            ).first()
        if row is None:
            return None
        return PollState(
            row.fingerprint,
            row.cursor,
            row.last_polled_at,
            row.failures,
            row.last_error,
            row.last_error_at,
        )

    async def begin(self, poller: str, fingerprint: str) -> PollState:
        """The poller's state; a fresh one (no cursor, nothing seen) when it has none yet or
        its state was kept for other trigger settings."""
        state = await self.get(poller)
        if state is not None and state.fingerprint == fingerprint:
            return state
        fresh = {
            "fingerprint": fingerprint,
            "cursor": None,
            "last_polled_at": None,
            "last_error": None,
            "last_error_at": None,
            "failures": 0,
        }
        stmt = self._insert(poll_state).values(poller=poller, **fresh)
        # Only over a state kept for other settings: another process sharing the inbox may
        # have started this one meanwhile (and moved its cursor), which must stand.
        stmt = stmt.on_conflict_do_update(
            index_elements=["poller"], set_=fresh, where=poll_state.c.fingerprint != fingerprint
        )
        async with self._write.begin() as conn:
            if (await conn.execute(stmt)).rowcount:
                await conn.execute(poll_seen.delete().where(poll_seen.c.poller == poller))
        state = await self.get(poller)
        return state if state is not None else PollState(fingerprint)

    async def unseen(self, poller: str, keys: Sequence[str]) -> list[str]:
        """Those of ``keys`` (hashed dedupe keys) the poller has not seen, in order."""
        seen: set[str] = set()
        async with self._read.connect() as conn:
            for start in range(0, len(keys), CHUNK):
                chunk = list(keys[start : start + CHUNK])
                rows = await conn.execute(
                    sa.select(poll_seen.c.key).where(
                        poll_seen.c.poller == poller, poll_seen.c.key.in_(chunk)
                    )
                )
                seen.update(rows.scalars())
        return [k for k in keys if k not in seen]

    async def advance(
        self,
        poller: str,
        fingerprint: str,
        cursor: dict[str, Any] | None,
        keys: Sequence[str],
        now: datetime,
        *,
        first: bool = False,
    ) -> bool:
        """Once a poll's events are committed: move the cursor, note its keys as seen (again),
        clear the failures, forget keys unseen for ``SEEN_FOR``. False (and nothing written)
        when the state was started afresh for other settings meanwhile, or, with ``first``
        (the cursor is being set for the first time), when another process set it first."""
        where = [poll_state.c.poller == poller, poll_state.c.fingerprint == fingerprint]
        if first:
            where.append(poll_state.c.last_polled_at.is_(None))
        async with self._write.begin() as conn:
            moved = await conn.execute(
                poll_state.update()
                .where(*where)
                .values(
                    cursor=cursor,
                    last_polled_at=now,
                    failures=0,
                    last_error=None,
                    last_error_at=None,
                )
            )
            if moved.rowcount == 0:
                return False
            for start in range(0, len(keys), CHUNK // 2):
                rows = [
                    {"poller": poller, "key": key, "seen_at": now}
                    for key in keys[start : start + CHUNK // 2]
                ]
                stmt = self._insert(poll_seen).values(rows)
                await conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["poller", "key"], set_={"seen_at": stmt.excluded.seen_at}
                    )
                )
            await conn.execute(
                poll_seen.delete().where(
                    poll_seen.c.poller == poller, poll_seen.c.seen_at < now - SEEN_FOR
                )
            )
        return True

    async def failed(self, poller: str, fingerprint: str, message: str, now: datetime) -> None:
        async with self._write.begin() as conn:
            await conn.execute(
                poll_state.update()
                .where(poll_state.c.poller == poller, poll_state.c.fingerprint == fingerprint)
                .values(failures=poll_state.c.failures + 1, last_error=message, last_error_at=now)
            )


# --------------------------------------------------------------------------- cron


def latest_moment(cron: str, zone: ZoneInfo, now: datetime) -> datetime:
    """The last moment of the schedule at or before ``now`` (in ``zone``)."""
    # Iterating backwards starts strictly before the given time: start a second later.
    return next(CronSim(cron, now.astimezone(zone) + timedelta(seconds=1), reverse=True))


def next_moment(cron: str, zone: ZoneInfo, after: datetime) -> datetime:
    """The first moment of the schedule strictly after ``after`` (in ``zone``)."""
    return next(CronSim(cron, after.astimezone(zone)))


# --------------------------------------------------------------------------- runners


class _Runner:
    """One zap's polling or schedule trigger, run until stopped; an error never ends it."""

    verb = "polling"

    def __init__(self, zap: Zap, trigger: Trigger, owner: Pollers) -> None:
        assert trigger.options_model is not None
        self.zap, self.trigger, self.owner = zap, trigger, owner
        self.options: Any = trigger.options_model.model_validate(zap.trigger.options)
        self.failures = 0
        self.fingerprint = _digest(self.settings(), 16)

    def settings(self) -> dict[str, Any]:
        """What the stored state is for: other settings start afresh."""
        spec = self.zap.trigger
        return {"app": spec.app, "event": spec.event, "connection": spec.connection}

    def describe(self) -> str:
        raise NotImplementedError

    async def step(self) -> float:
        """Do one round; return the seconds until the next."""
        raise NotImplementedError

    async def run(self, after: asyncio.Task[None] | None = None) -> None:
        if after is not None:  # the zap's previous version: let it finish first
            await asyncio.wait([after])
        stopping = self.owner.stopping
        while not stopping.is_set():
            if not self.owner.holds(self.zap.zap):  # another worker runs it (or nobody yet)
                await self.owner.next_round()
                continue
            try:
                delay = await self.step()
                if self.failures:
                    self.owner.report(f"zap {self.zap.zap!r}: {self.verb} works again")
                    self.failures = 0
            except Exception as exc:
                delay = await self._failed(exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), delay)

    def base_delay(self) -> float:
        return self.owner.min_interval

    async def _failed(self, exc: Exception) -> float:
        self.failures += 1
        message = str(exc) if isinstance(exc, ZapError) else f"{type(exc).__name__}: {exc}"
        if isinstance(exc, AuthError) and self.zap.trigger.connection:
            connections.forget(self.zap.trigger.app, self.zap.trigger.connection)
        try:
            await self.owner.store.failed(
                self.zap.zap, self.fingerprint, message[:2000], self.owner.clock()
            )
        except Exception as store_exc:  # the inbox is away too: retried all the same
            log.warning(
                "recording a %s failure of %s failed: %s", self.verb, self.zap.zap, store_exc
            )
        base = self.base_delay()
        delay = min(max(MAX_BACKOFF, base), base * 2 ** min(self.failures, 20))
        delay = max(delay, getattr(exc, "retry_after", None) or 0.0)
        log.warning(
            "zap %s: %s failed (%s); next try in %g s", self.zap.zap, self.verb, message, delay
        )
        if self.failures == 1:
            self.owner.report(
                f"zap {self.zap.zap!r}: {self.verb} failed ({message}); trying again in "
                f"{delay:g} s, then less often until it works"
            )
        return delay


class _Poller(_Runner):
    def settings(self) -> dict[str, Any]:
        # The interval and skip_existing do not change what was seen.
        own = self.options.model_dump(mode="json", exclude=set(PollingOptions.model_fields))
        return {**super().settings(), "options": own}

    def base_delay(self) -> float:
        interval = self.options.interval or self.trigger.interval
        assert interval is not None
        return max(self.owner.min_interval, interval.total_seconds())

    def describe(self) -> str:
        return f"polling {self.trigger.key} every {self.base_delay():g} s"

    async def step(self) -> float:
        store, zap = self.owner.store, self.zap
        state = await store.begin(zap.zap, self.fingerprint)
        assert self.trigger.poll is not None
        found = await self.trigger.poll(await self._connection(), self.options, state.cursor)
        items: dict[str, tuple[str, dict[str, Any]]] = {}
        for key, payload in found.items:
            items.setdefault(_digest(key), (key, payload))
        new = await store.unseen(zap.zap, list(items))
        if state.last_polled_at is None and self.options.skip_existing:
            if items:
                self.owner.report(
                    f"zap {zap.zap!r}: first poll noted {len(items)} item(s) already there; "
                    "new ones run the zap"
                )
        elif new:
            events = [self._event(*items[hashed]) for hashed in new]
            if any(await self.owner.inbox.put_many(events)):
                self.owner.on_new()
        await store.advance(
            zap.zap, self.fingerprint, found.cursor, list(items), self.owner.clock()
        )
        return self.base_delay()

    def _event(self, key: str, payload: dict[str, Any]) -> Event:
        spec = self.zap.trigger
        return Event(
            id=derived_id("poll", self.zap.zap, key),
            app=spec.app,
            trigger=spec.event,
            payload=payload,
            connection=spec.connection,
            zap=self.zap.zap,
        )

    async def _connection(self) -> Any:
        owner, name = registry.app(self.zap.trigger.app), self.zap.trigger.connection
        if owner.connection is None or name is None:
            return None
        return await connections.resolve(owner, name)


class _Schedule(_Runner):
    verb = "the schedule"

    def __init__(self, zap: Zap, trigger: Trigger, owner: Pollers) -> None:
        super().__init__(zap, trigger, owner)
        self.zone = ZoneInfo(self.options.timezone)
        self.started_at = owner.clock()

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "cron": self.options.cron, "timezone": self.options.timezone}

    def describe(self) -> str:
        upcoming = next_moment(self.options.cron, self.zone, self.owner.clock())
        return f"schedule {self.options.cron!r} ({self.options.timezone}), next {upcoming}"

    async def step(self) -> float:
        store, zap, now = self.owner.store, self.zap, self.owner.clock()
        state = await store.begin(zap.zap, self.fingerprint)
        done = (state.cursor or {}).get("done_until")
        # A new schedule fires from now on; a known one fires its latest moment not fired yet.
        last = now if done is None else datetime.fromisoformat(done)
        due = latest_moment(self.options.cron, self.zone, now)
        fire = done is not None and due > last
        if fire:
            if await self.owner.inbox.put(self._event(due, now)):
                self.owner.on_new()
            last = due
        if done is None or fire:
            cursor = {"done_until": last.astimezone(UTC).isoformat()}
            moved = await store.advance(
                zap.zap, self.fingerprint, cursor, (), now, first=done is None
            )
            if not moved and done is None:
                return 0.0  # another scheduler on this inbox started it first: go by its cursor
        upcoming = next_moment(self.options.cron, self.zone, max(now, last))
        return max(0.0, (upcoming - self.owner.clock()).total_seconds())

    def _event(self, due: datetime, now: datetime) -> Event:
        spec, moment = self.zap.trigger, due.astimezone(UTC).isoformat()
        return Event(
            id=derived_id("schedule", self.zap.zap, moment),
            app=spec.app,
            trigger=spec.event,
            payload={
                "scheduled_at": due.astimezone(self.zone).isoformat(),
                "fired_at": now.astimezone(UTC).isoformat(),
                "timezone": self.options.timezone,
                "missed": due < self.started_at,
            },
            connection=spec.connection,
            zap=self.zap.zap,
        )


# --------------------------------------------------------------------------- all of them


class Pollers:
    """The polling triggers and schedules of the zaps, one task each, in the running loop."""

    def __init__(
        self,
        inbox: Inbox,
        *,
        report: Callable[[str], None] = log.info,
        on_new: Callable[[], None] = lambda: None,
        min_interval: float = MIN_INTERVAL,
        clock: Clock = _utcnow,
        stop_grace: float = STOP_GRACE,
        holder: str | None = None,
        lease: float = LEASE_SECONDS,
    ) -> None:
        """``on_new`` is called when an event was stored (e.g. to wake the dispatcher);
        ``clock`` gives the time schedules go by; ``stop_grace``: how long :meth:`stop` lets a
        poll in flight finish; ``holder``: the worker these pollers run for, which holds each
        zap's poller under a lease of ``lease`` seconds (None: no leases, every one runs
        here)."""
        self.inbox, self.store = inbox, PollStore(inbox)
        self.report, self.on_new = report, on_new
        self.min_interval, self.clock, self.stop_grace = min_interval, clock, stop_grace
        self.holder, self.lease = holder, lease
        self.stopping = asyncio.Event()
        self._tasks: dict[str, tuple[str, asyncio.Task[None]]] = {}
        self.held: set[str] = set()
        """The zaps whose poller this worker holds (with ``holder``)."""
        self._round = asyncio.Event()
        self._renew_now = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None

    def holds(self, zap_id: str) -> bool:
        """Whether this worker is the one to run the zap's poller now."""
        return self.holder is None or zap_id in self.held

    async def next_round(self) -> None:
        """Wait for the next renewal of the leases (or the stop)."""
        waiting = asyncio.ensure_future(self._round.wait())
        stopping = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait(
                [waiting, stopping], timeout=self.lease, return_when="FIRST_COMPLETED"
            )
        finally:
            waiting.cancel()
            stopping.cancel()

    async def _keep_leases(self) -> None:
        """Renew the leases on this worker's pollers every third of ``lease``; take those that
        are free or whose holder died. If the inbox cannot be reached for longer than a lease,
        this worker can no longer be sure it holds any: it stops running them until it can."""
        assert self.holder is not None
        loop = asyncio.get_running_loop()
        renewed = loop.time()
        while not self.stopping.is_set():
            self._renew_now.clear()
            names = [lease_name(zap_id) for zap_id in self._tasks]
            try:
                taken = await self.inbox.take_leases(self.holder, names, self.lease)
                renewed = loop.time()
                held = {name.removeprefix("poller:") for name in taken}
            except Exception as exc:
                log.warning("renewing the pollers' leases failed: %s", exc)
                held = self.held if loop.time() - renewed < self.lease * 0.9 else set()
            for zap_id in sorted(held - self.held):
                log.info("zap %s: its poller runs on this worker", zap_id)
            for zap_id in sorted(self.held - held):
                log.info("zap %s: its poller no longer runs on this worker", zap_id)
            self.held = held
            done, self._round = self._round, asyncio.Event()
            done.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._renew_now.wait(), self.lease / 3)

    @property
    def running(self) -> list[str]:
        """The ids of the zaps being polled or scheduled."""
        return sorted(self._tasks)

    def update(self, zaps: list[Zap]) -> None:
        """Run exactly the enabled zaps with a polling or schedule trigger: start new ones,
        restart those whose trigger changed, stop the others. Call after each reload."""
        wanted: dict[str, tuple[Zap, Trigger]] = {}
        for zap in zaps:
            with contextlib.suppress(registry.UnknownName):
                trigger = registry.trigger(zap.trigger.app, zap.trigger.event)
                if zap.enabled and trigger.kind in ("polling", "schedule"):
                    wanted[zap.zap] = (zap, trigger)
        previous: dict[str, asyncio.Task[None]] = {}
        for zap_id, (spec, task) in list(self._tasks.items()):
            if zap_id not in wanted or wanted[zap_id][0].trigger.model_dump_json() != spec:
                task.cancel()
                previous[zap_id] = self._tasks.pop(zap_id)[1]
        for zap_id, (zap, trigger) in wanted.items():
            if zap_id not in self._tasks:
                self._start(zap, trigger, previous.get(zap_id))
        if self.holder is not None:
            if self._keeper is None and self._tasks:
                self._keeper = asyncio.create_task(self._keep_leases(), name="zapflow-leases")
            self._renew_now.set()  # new zaps ask for their leases at once

    def _start(self, zap: Zap, trigger: Trigger, previous: asyncio.Task[None] | None) -> None:
        kind = _Poller if trigger.kind == "polling" else _Schedule
        try:
            runner = kind(zap, trigger, self)
            self.report(f"zap {zap.zap!r}: {runner.describe()}")
        except Exception as exc:  # the loader checked the options; this is a bug, not a typo
            self.report(f"zap {zap.zap!r}: cannot run its trigger ({exc})")
            return
        task = asyncio.create_task(runner.run(previous), name=f"zapflow-{trigger.kind}-{zap.zap}")
        self._tasks[zap.zap] = (zap.trigger.model_dump_json(), task)

    async def stop(self) -> None:
        """Stop every runner: a poll in flight may finish (up to ``stop_grace``)."""
        self.stopping.set()
        tasks = [task for _, task in self._tasks.values()]
        self._tasks.clear()
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self.stop_grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
            self._keeper = None
        if self.holder is not None and self.held:
            try:  # another worker takes them over at once rather than when they expire
                await self.inbox.drop_leases(self.holder)
            except Exception as exc:
                log.warning("letting the pollers' leases go failed (they expire): %s", exc)
            self.held = set()
