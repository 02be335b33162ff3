"""The dispatcher: claims committed events from the inbox and runs the zaps they trigger.

Each (event, zap) runs once: the inbox's run ledger is written before a run starts and closed
when it ends, so a dispatcher that crashes and restarts (or a second dispatcher sharing the
inbox) never runs a finished zap run again. A dispatcher is a worker ``host:pid:start``: every
HEARTBEAT_EVERY seconds it notes it is alive and extends its leases on the events it is running.
The events and half-done runs of a dead one are taken over as soon as it is known dead — on this
host, its process is gone, a zombie, or another process with its PID (the start time differs);
anywhere, its heartbeat stopped SILENT_AFTER seconds ago — else when its leases expire or after
``stale_after``. If Prefect's server is down or failing, events go
back to the inbox and wait, and the dispatcher backs off until the server answers again.

Runs go to each zap's live flow run (``flows.live``): the dispatcher keeps claiming while runs
are in flight (up to ``in_flight`` events, topped up a batch at a time), and writes the ledger
and marks events done in group commits, so neither Prefect nor the inbox is asked once per
event.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import logging
import os
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flows import metrics
from flows.compiler import EventRun
from flows.events import Event, derived_id
from flows.intake.checkpoints import Checkpoints
from flows.intake.db import Gate, RunResult
from flows.intake.folder import git_revision
from flows.intake.inbox import Inbox
from flows.intake.pressure import IntakePressure
from flows.live import LiveRuns
from flows.model import POLLING_FLOOD, Flood, Zap, autoreplay_schedule
from flows.plan import ZapPlan, plan_of
from flows.runtime import Journal

log = logging.getLogger("zapflow.dispatcher")
HOST = socket.gethostname()
HEARTBEAT_EVERY = 5.0
"""Seconds between two heartbeats of a dispatcher (each extends its leases on the events it is
still running)."""
SILENT_AFTER = 60.0
"""A dispatcher whose heartbeat stopped this long ago is dead, wherever it ran: its events and
runs are taken over (one on this host is known dead at once, by its process identity)."""
POISON_TRIES = 3
"""Times an event may fail to become a run through its own fault before its run is marked
failed (in this process; a restart gives it as many again)."""


def is_infrastructure(exc: BaseException) -> bool:
    """Whether a failure to run is Prefect's (its server down, slow or failing: every event
    waits and the dispatcher backs off) rather than the event's own (something in it cannot be
    recorded or run: only that event is retried, then failed)."""
    import httpx

    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code >= 500 or exc.response.status_code in (408, 429)
    return isinstance(exc, httpx.TransportError | OSError | TimeoutError)


def matching(zaps: list[Zap], event: Event) -> list[Zap]:
    """The enabled zaps an event triggers (those its trigger's ``accepts`` lets through)."""
    if event.zap is not None:
        return [z for z in zaps if z.zap == event.zap and z.enabled]
    found = [
        z
        for z in zaps
        if z.enabled
        and z.trigger.app == event.app
        and z.trigger.event == event.trigger
        and z.trigger.connection == event.connection
    ]
    if found:
        accepts = plan_of(found[0]).trigger.accepts
        if accepts is not None:
            found = [z for z in found if accepts(z.trigger.options, event.payload)]
    return found


def flood_limits(zaps: list[Zap]) -> dict[str, tuple[int, float]]:
    """Each flood-protected zap's (max runs, per seconds): its ``flood``, or for a polling
    trigger by default ``POLLING_FLOOD``."""
    limits: dict[str, tuple[int, float]] = {}
    for zap in zaps:
        flood = zap.flood
        if flood is None:
            kind = plan_of(zap).trigger.kind
            flood = POLLING_FLOOD if kind == "polling" else None
        if isinstance(flood, Flood):
            limits[zap.zap] = (flood.max, flood.per.total_seconds())
    return limits


def gates(zaps: list[Zap]) -> dict[str, Gate]:
    """Each zap's ``concurrency`` and ``rate_limit``, where it sets one."""
    return {
        zap.zap: Gate(zap.concurrency, zap.rate_limit)
        for zap in zaps
        if zap.concurrency is not None or zap.rate_limit is not None
    }


ZAP_FAILED = ("builtin", "zap_failed")
"""The trigger of error zaps: the event a zap run that failed for good makes."""


def failure_event(
    zap: Zap,
    event_id: str,
    *,
    message: str,
    failing_step: str | None,
    kind: str,
    autoreplays: int,
    flow_run_id: str | None,
    payload: dict[str, Any] | None = None,
) -> Event:
    """The ``builtin.zap_failed`` event of a zap run that failed for good (``payload``: the
    failed run's trigger payload)."""
    failure = {
        "zap": zap.zap,
        "event_id": event_id,
        "app": zap.trigger.app,
        "trigger": zap.trigger.event,
        "failing_step": failing_step,
        "error": message,
        "kind": kind,
        "autoreplays": autoreplays,
        "failed_at": datetime.now(UTC).isoformat(),
        "flow_run_id": flow_run_id,
        "replay_command": f"zapflow replay {event_id[:12]} --zap {zap.zap}",
        "payload": payload or {},
    }
    return Event(
        # Derived, so one failure makes one event; hex like every other id, so its first 12
        # characters tell it apart in `zapflow runs` and `zapflow replay`.
        id=derived_id("zap-failed", zap.zap, event_id),
        app=ZAP_FAILED[0],
        trigger=ZAP_FAILED[1],
        payload=failure,
    )


def matching_ids(zaps: list[Zap], event: Event) -> list[str]:
    return [zap.zap for zap in matching(zaps, event)]


WRITE_GAP = 0.02
"""Seconds between two claims, or two writes of finished runs, of one dispatcher."""
WRITE_GAP_BUSY = 0.1
"""The same under a burst: SQLite's write lock goes to whoever asks when it is free (a waiting
writer sleeps and looks again), so the fewer the dispatcher's writes, the sooner the receiver's."""
BUSY_BATCH = 10


async def _pace(last: float, gap: float) -> None:
    """Wait until ``gap`` seconds after ``last`` (monotonic); at once if that has passed."""
    wait = last + gap - time.monotonic()
    if wait > 0:
        await asyncio.sleep(wait)


def process_started(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from /proc), "Z" for a zombie, or
    None if there is no such process; "" where /proc is not there to say."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except FileNotFoundError:
        return None if os.path.isdir("/proc/self") else _signal_zero(pid)
    except OSError:
        return ""
    if not fields or fields[0] in ("Z", "X"):
        return "Z"
    return fields[19] if len(fields) > 19 else ""


def _signal_zero(pid: int) -> str | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, someone else's
    return ""


def worker_identity() -> str:
    """This process as a worker: ``host:pid:start``, the start time telling this process from
    a later one given the same PID."""
    pid = os.getpid()
    return f"{HOST}:{pid}:{process_started(pid) or 0}"


def dead_local_workers(workers: set[str]) -> list[str]:
    """Those of the workers that ran on this host in a process that is gone: no process with
    that PID, a zombie, or a process with the PID that started at another time (the PID was
    reused). Workers named the old way (``host:pid``) are judged by their PID alone."""
    dead = []
    for worker in workers:
        parts = worker.split(":")
        if len(parts) >= 3 and parts[-1].isdigit() and parts[-2].isdigit():
            host, pid, start = ":".join(parts[:-2]), int(parts[-2]), parts[-1]
        elif len(parts) >= 2 and parts[-1].isdigit():
            host, pid, start = ":".join(parts[:-1]), int(parts[-1]), None
        else:
            continue
        if host != HOST or pid == os.getpid():
            continue
        now = process_started(pid)
        if now is None or now == "Z" or (start not in (None, "0") and now not in ("", start)):
            dead.append(worker)
    return dead


@dataclass
class DispatchStats:
    runs: int = 0
    skipped: int = 0
    infrastructure_errors: int = 0
    inbox_errors: int = 0
    last_error: str = ""
    by_state: dict[str, int] = field(default_factory=dict)


class Dispatcher:
    def __init__(
        self,
        inbox: Inbox,
        zaps: Callable[[], list[Zap]],
        *,
        concurrency: int = 50,
        batch: int = 100,
        in_flight: int = 500,
        lease: float = 120.0,
        idle_poll: float = 1.0,
        stale_after: float = 600.0,
        live_idle: float = 5.0,
        worker: str | None = None,
        zap_folder: Path | None = None,
        role: str = "all",
    ) -> None:
        """``concurrency``: events one zap runs at once; ``in_flight``: events claimed and not
        finished yet; ``live_idle``: seconds a zap's live flow run waits for more events;
        ``role``: the serve process's, as its heartbeat says."""
        self.inbox, self.zaps = inbox, zaps
        self.batch, self.lease, self.idle_poll = batch, lease, idle_poll
        self.in_flight, self.stale_after = in_flight, stale_after
        self.worker = worker or worker_identity()
        self.role = role
        self.zap_folder = zap_folder
        self._kept_versions: set[str] = set()
        self.live = LiveRuns(idle=live_idle, concurrency=concurrency, at_once=in_flight)
        self.checkpoints = Checkpoints(inbox)
        self.wake = asyncio.Event()
        self.intake = IntakePressure()
        self.stats = DispatchStats()
        self._stopping = False
        self._running = False
        self._backoff = 0.0
        self._faults: dict[tuple[str, str], int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._side: set[asyncio.Task[None]] = set()
        self._in_hand: set[int] = set()
        self._recovered = asyncio.Event()
        self._room = asyncio.Event()
        self._results: list[RunResult] = []
        self._done: list[int] = []
        self._parked: list[int] = []
        self._failures: list[Event] = []
        self._flood_limits: dict[str, tuple[int, float]] = {}
        self._gates: dict[str, Gate] = {}
        self._holding: set[str] = set()
        self._due: list[float] = []  # a heap of when runs parked here are due
        self._release: list[tuple[int, float]] = []
        self._flush_wanted = asyncio.Event()
        self._last_claim = 0.0
        self._claim_gap = WRITE_GAP
        self._flushed = asyncio.Condition()

    @property
    def alive(self) -> bool:
        return self._running and not self._stopping

    def health(self) -> tuple[bool, str]:
        """Whether events are being run, and if not why (for ``/readyz/running``)."""
        if not self.alive:
            return False, "the dispatcher is not running"
        if self._backoff:
            return False, (
                f"Prefect's server failed ({self.stats.last_error}); "
                "accepted events wait in the inbox and run when it answers"
            )
        return True, "runs drain"

    def prefect_back(self) -> None:
        """Prefect answers again (a run went through, or serve's probe of its server): every
        event waiting for it may run now, at full speed — each was given back with the backoff
        of its moment, up to 30 s, and would otherwise trickle back one at a time."""
        if not self._backoff:
            return
        self._backoff = 0.0
        self._recovered.set()
        self._spawn(self._hurry())

    async def _hurry(self) -> None:
        hurried = await self.inbox.hurry()
        if hurried:
            log.info("Prefect answers again: %d waiting events run now", hurried)
        self.wake.set()

    def stop(self) -> None:
        """Stop claiming; the events in hand are finished (``run`` returns after them)."""
        self._stopping = True
        self.wake.set()
        self._room.set()

    async def run(self) -> None:
        self._running = True
        flusher = asyncio.create_task(self._flush_loop())
        beating = asyncio.create_task(self._heartbeat())
        try:
            await self._claim_loop()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.live.close()
        finally:
            await self.checkpoints.close()
            self._stopping = True
            self._flush_wanted.set()
            with contextlib.suppress(Exception):
                await flusher
            beating.cancel()
            with contextlib.suppress(BaseException):
                await beating
            await self._safely(self.inbox.sign_off(self.worker))
            self._running = False

    async def _heartbeat(self) -> None:
        """Say this dispatcher is alive, and keep the leases of the events it runs, every
        HEARTBEAT_EVERY seconds."""
        while True:
            await self._safely(
                self.inbox.heartbeat(
                    self.worker, HOST, sorted(self._in_hand), self.lease, role=self.role
                )
            )
            await asyncio.sleep(HEARTBEAT_EVERY)

    async def _dead(self, workers: set[str]) -> list[str]:
        """Those of ``workers`` that are dead: on this host, their process is gone; anywhere,
        their heartbeat stopped SILENT_AFTER seconds ago."""
        workers = workers - {self.worker}
        dead = set(dead_local_workers(workers))
        dead |= await self.inbox.silent_workers(workers - dead, SILENT_AFTER)
        return sorted(dead)

    async def _release_dead(self) -> None:
        """Take back at once the events of dispatchers on this host whose process is gone
        (a crash or SIGKILL), instead of waiting for their leases to run out."""
        for worker in await self._dead(await self.inbox.claiming_workers()):
            count = await self.inbox.release_worker(worker)
            if count:
                log.warning("took back %d events claimed by %s, which is gone", count, worker)

    async def _claim_loop(self) -> None:
        next_check = 0.0
        while not self._stopping:
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + 2 * HEARTBEAT_EVERY
                try:
                    await self._release_dead()
                    # Runs queued by a limit the zap no longer has start now.
                    await self.inbox.wake_ungated(self._gates)
                except Exception as exc:
                    log.warning("looking for events of dead dispatchers failed: %s", exc)
            room = self.in_flight - len(self._tasks)
            # A claim is a transaction: with events in hand waiting for their turn, the room
            # a finished run frees waits until there is a batch's worth of it (or half of
            # in_flight), instead of one claim per finished run under a burst.
            if room < min(self.batch, max(1, self.in_flight // 2)):
                self._room.clear()
                await self._room.wait()
                continue
            if self._backoff:  # cut short when Prefect is seen back (prefect_back)
                self._recovered.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._recovered.wait(), self._backoff)
                if self._stopping:
                    return
            # Under a burst the receiver nudges hundreds of times a second: claiming that often
            # would compete with its commits for the database's write lock (on SQLite, a waiting
            # writer sleeps). One claim per WRITE_GAP takes whatever arrived meanwhile.
            await _pace(self._last_claim, self._claim_gap)
            self._last_claim = time.monotonic()
            # Cleared before claiming: a nudge for an event committed after the claim's look
            # at the inbox is kept, so the wait below ends at once instead of after idle_poll.
            self.wake.clear()
            try:
                # One transaction claims the events and enters their runs in the ledger.
                zaps = self.zaps()
                self._flood_limits = flood_limits(zaps)
                self._gates = gates(zaps)
                claimed, started = await self.inbox.claim_and_start(
                    self.worker,
                    functools.partial(matching_ids, zaps),
                    limit=min(self.batch, room),
                    lease=self.lease,
                    stale_after=self.stale_after,
                    floods=self._flood_limits,
                    gates=self._gates,
                )
            except Exception as exc:  # the inbox is busy or away: try again, never give up
                self.stats.inbox_errors += 1
                self.stats.last_error = f"inbox: {type(exc).__name__}: {exc}"
                log.warning("claiming from the inbox failed (%s); retrying", exc)
                await asyncio.sleep(min(5.0, 0.1 * 2 ** min(self.stats.inbox_errors, 6)))
                continue
            # The claim is committed: from here on its events are run or released, whatever
            # else fails (a run left to a dead dispatcher is looked at again later).
            await self._safely(self._take_over_dead(started))
            # Busy (a claim full of events): claim less often, in bigger batches, so the
            # receiver finds the write lock free more often; light load: claim at once.
            self._claim_gap = WRITE_GAP_BUSY if len(claimed) >= BUSY_BATCH else WRITE_GAP
            if not claimed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self._idle_wait())
                continue
            now = datetime.now(UTC)
            for event in claimed:
                if event.attempts == 1:  # its first claim: how long it waited for a worker
                    metrics.CLAIM_LAG.observe(max(0.0, (now - event.received_at).total_seconds()))
                self._in_hand.add(event.seq)
                task = asyncio.create_task(self._one(event, matching(zaps, event), started))
                task.add_done_callback(functools.partial(self._out_of_hand, event.seq))
                self._tasks.add(task)
                task.add_done_callback(self._task_done)

    def _idle_wait(self) -> float:
        """How long to wait for a nudge when nothing was claimable: ``idle_poll``, or less
        when a run this dispatcher parked is due sooner."""
        now = time.time()
        if self._due and self._due[0] <= now:
            while self._due and self._due[0] <= now:  # due: the claim just made took them
                heapq.heappop(self._due)
            return 0.0
        if not self._due:
            return self.idle_poll
        return min(self.idle_poll, self._due[0] - now + 0.005)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(self._safely(work))
        self._side.add(task)
        task.add_done_callback(self._side.discard)

    def _out_of_hand(self, seq: int, _: asyncio.Task[None]) -> None:
        self._in_hand.discard(seq)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._room.set()

    async def _take_over_dead(self, states: dict[tuple[str, str], str]) -> None:
        """Runs the ledger says are running elsewhere: started here after all (``states``
        updated) if the dispatcher running them is known to have died."""
        busy = [p for p, s in states.items() if s == "running"]
        if busy:
            dead = await self._dead(await self.inbox.running_workers(busy))
            if dead:
                log.info("taking over runs left by %s", ", ".join(dead))
                states.update(
                    await self.inbox.start_runs(
                        busy,
                        worker=self.worker,
                        stale_after=self.stale_after,
                        dead_workers=dead,
                    )
                )

    async def _one(self, event: Event, zaps: list[Zap], states: dict[tuple[str, str], str]) -> None:
        mine = [z for z in zaps if states.get((event.id, z.zap)) == "started"]
        elsewhere = any(states.get((event.id, z.zap)) == "running" for z in zaps)
        # A run parked in a delay and not due yet (the event came back for another's): the
        # event parks again until the earliest of them.
        parked = any(states.get((event.id, z.zap)) == "waiting" for z in zaps)
        # Held by flood protection: the event waits, parked, until they are let go.
        held = [z for z in zaps if states.get((event.id, z.zap)) == "held"]
        for zap in held:
            if zap.zap not in self._holding:
                self._holding.add(zap.zap)
                log.warning(
                    "%s holds events: more runs than its flood limit (%s per %g s); see "
                    "`zapflow held --zap %s`, then `zapflow release` or `zapflow discard`",
                    zap.zap,
                    *self._flood_limits.get(zap.zap, (0, 0)),
                    zap.zap,
                )
        self._holding -= {z.zap for z in mine}
        # Queued for a slot of the zap's concurrency or rate limit: parked until one frees up.
        queued = any(states.get((event.id, z.zap)) == "queued" for z in zaps)
        parked = parked or bool(held) or queued
        self.stats.skipped += sum(
            1
            for z in zaps
            if states.get((event.id, z.zap))
            not in ("started", "running", "waiting", "held", "queued")
        )
        done: dict[tuple[str, str], dict[str, tuple[str, Any]]] = {}
        replays: dict[tuple[str, str], int] = {}
        if mine and event.attempts > 1:  # claimed before: a run may be resumed mid-way
            try:
                done = await self.inbox.load_steps([(event.id, z.zap) for z in mine])
                replaying = [(event.id, z.zap) for z in mine if autoreplay_schedule(z)]
                replays = await self.inbox.autoreplays(replaying) if replaying else {}
            except Exception as exc:  # then its runs cannot start safely now: they wait
                self.stats.inbox_errors += 1
                self.stats.last_error = f"inbox: {type(exc).__name__}: {exc}"
                await self._safely(self.inbox.abandon_runs([(event.id, z.zap) for z in mine]))
                self._release.append((event.seq, 1.0))
                self._flush_wanted.set()
                return
        outcomes = await asyncio.gather(
            *(
                self._run(
                    zap,
                    event,
                    self.checkpoints.journal(event.id, zap.zap, done.get((event.id, zap.zap))),
                )
                for zap in mine
            ),
            return_exceptions=True,
        )
        down: list[tuple[Zap, BaseException]] = []
        again: list[tuple[Zap, BaseException]] = []
        for zap, outcome in zip(mine, outcomes, strict=True):
            if isinstance(outcome, EventRun):
                state = self._record(
                    zap, outcome, replays.get((event.id, zap.zap), 0), event.payload
                )
                parked = parked or state == "waiting"
            elif isinstance(outcome, BaseException):
                if is_infrastructure(outcome):
                    down.append((zap, outcome))
                elif not self._poisoned(event, zap, outcome):
                    again.append((zap, outcome))
        if down or again:  # those runs did not happen; the event waits
            if down:  # Prefect down or failing: everyone waits
                self._down(down[0][1])
            if down:
                reason = f"Prefect unreachable ({type(down[0][1]).__name__}); runs when it answers"
                await self._safely(
                    self.inbox.abandon_runs([(event.id, z.zap) for z, _ in down], reason)
                )
            for zap, error in again:
                tries = self._faults.get((event.id, zap.zap), 0)
                reason = f"could not be run (try {tries} of {POISON_TRIES}): {type(error).__name__}"
                await self._safely(self.inbox.abandon_runs([(event.id, zap.zap)], reason))
            tries = max((self._faults.get((event.id, z.zap), 0) for z, _ in again), default=0)
            own_delay = min(60.0, 2.0**tries) if again else 0.0  # this event's alone
            self._release.append((event.seq, max(self._backoff if down else 0.0, own_delay)))
        elif elsewhere:
            # Another dispatcher is running one of them (or died doing so): look again after
            # a while; its ledger row tells when it is finished or stale.
            self._release.append((event.seq, self.lease / 4))
        elif parked:  # stored until its earliest waiting run is due (the ledger knows when)
            self.prefect_back()
            self._parked.append(event.seq)
        else:
            self.prefect_back()  # if this is the first run since Prefect came back
            self._done.append(event.seq)
        self._flush_wanted.set()

    def _poisoned(self, event: Event, zap: Zap, error: BaseException) -> bool:
        """Count a failure that is the event's own; after ``POISON_TRIES``, record its run as
        failed (with the reason, for ``zapflow runs`` and ``zapflow replay``) and say True."""
        key = (event.id, zap.zap)
        tries = self._faults[key] = self._faults.get(key, 0) + 1
        reason = f"{type(error).__name__}: {error}"
        if len(reason) > 300:
            reason = reason[:297] + "..."
        if tries < POISON_TRIES:
            log.warning(
                "%s on %s could not be run (try %s of %s): %s",
                zap.zap,
                event.id,
                tries,
                POISON_TRIES,
                reason,
            )
            return False
        del self._faults[key]
        self.stats.runs += 1
        self.stats.by_state["failed"] = self.stats.by_state.get("failed", 0) + 1
        log.error(
            "%s on %s failed: it could not be run %s times: %s", zap.zap, event.id, tries, reason
        )
        message = f"could not be run ({tries} tries): {reason}"
        self._results.append(
            RunResult(event_id=event.id, zap=zap.zap, state="failed", message=message)
        )
        self._failed(
            zap,
            event.id,
            message=message,
            failing_step=None,
            kind="could_not_run",
            autoreplays=0,
            flow_run_id=None,
            payload=event.payload,
        )
        return True

    def nudged(self) -> None:
        """The receiver committed deliveries: claim them, and note how busy it is."""
        self.intake.nudged()
        self.wake.set()

    async def _run(self, zap: Zap, event: Event, journal: Journal) -> EventRun:
        await self.intake.calm()
        started = time.perf_counter()
        waited = [step for step, (status, _) in journal.done.items() if status == "waiting"]
        if waited:
            log.info("%s on %s resumes after its %s step", zap.zap, event.id, waited[0])
        elif journal.done:
            log.warning(
                "%s on %s resumed: step(s) %s done before are not run again",
                zap.zap,
                event.id,
                ", ".join(journal.done),
            )
        plan = plan_of(zap)
        await self._keep_version(plan)
        result = await self.live.run(plan, event, journal)
        log.info(
            "%s on %s: %s in %.3f s",
            zap.zap,
            event.id,
            result.outcome.status,
            time.perf_counter() - started,
        )
        return result

    async def _keep_version(self, plan: ZapPlan) -> None:
        """Keep the definition of a zap version the first time it runs here (so a run can be
        replayed with the zap it ran), with the zap folder's git revision."""
        zap, version = plan.zap, plan.version
        if version in self._kept_versions:
            return
        self._kept_versions.add(version)
        definition = zap.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        revision = await asyncio.to_thread(git_revision, self.zap_folder)
        await self._safely(self.inbox.save_zap_version(version, zap.zap, definition, revision))

    def _record(
        self,
        zap: Zap,
        result: EventRun,
        replayed: int = 0,
        payload: dict[str, Any] | None = None,
    ) -> str:
        """Note how a run ended, for the next ledger write; returns the state recorded (a run
        that failed and has autoreplays left is ``waiting``: parked until its next try)."""
        outcome = result.outcome
        status, message, resume_at = outcome.status, outcome.message or None, outcome.resume_at
        replays: int | None = None
        schedule = autoreplay_schedule(zap)
        if status == "failed" and schedule:
            if outcome.retryable and replayed < len(schedule):
                status, replays = "waiting", replayed + 1
                resume_at = datetime.now(UTC) + schedule[replayed]
                message = (
                    f"{message}; autoreplay {replays} of {len(schedule)} at "
                    f"{resume_at:%Y-%m-%d %H:%M:%S} UTC"
                )
                log.warning("%s on %s: %s", zap.zap, result.event_id, message)
            elif replayed:
                message = f"{message} (after {replayed} autoreplays)"
        if status == "failed":
            self._failed(
                zap,
                result.event_id,
                message=message or "",
                failing_step=result.failing_step,
                kind="transient" if outcome.retryable else "permanent",
                autoreplays=replayed,
                flow_run_id=result.flow_run_id,
                payload=payload,
            )
        self.stats.runs += 1
        self.stats.by_state[status] = self.stats.by_state.get(status, 0) + 1
        metrics.record_run(zap.zap, status, outcome.steps)
        self._results.append(
            RunResult(
                event_id=result.event_id,
                zap=zap.zap,
                state=status,
                flow_run_id=result.flow_run_id,
                failing_step=result.failing_step,
                message=message,
                resume_at=resume_at,
                zap_version=plan_of(zap).version,
                autoreplays=replays,
                steps=outcome.unsaved,
            )
        )
        if resume_at is not None:  # wake up for it (other serves' within 1 s)
            heapq.heappush(self._due, resume_at.timestamp())
        return status

    def _failed(self, zap: Zap, event_id: str, **details: Any) -> None:
        """A run failed for good: its ``builtin.zap_failed`` event goes to the inbox with the
        ledger row (when an enabled zap has that trigger). An error zap's own failure makes
        none: no loops."""
        if (zap.trigger.app, zap.trigger.event) == ZAP_FAILED:
            return
        if any(z.enabled and (z.trigger.app, z.trigger.event) == ZAP_FAILED for z in self.zaps()):
            self._failures.append(failure_event(zap, event_id, **details))

    async def _safely(self, write: object) -> None:
        try:
            await write  # type: ignore[misc]
        except Exception as exc:  # leases expire and stale runs are taken over anyway
            self.stats.inbox_errors += 1
            self.stats.last_error = f"inbox: {type(exc).__name__}: {exc}"

    async def _flush_loop(self) -> None:
        """Write finished runs and done events in group commits."""
        last, gap = 0.0, WRITE_GAP
        while True:
            await self._flush_wanted.wait()
            await _pace(last, gap)  # one write per gap takes every run finished since
            last = time.monotonic()
            self._flush_wanted.clear()
            results, done, release = self._results, self._done, self._release
            parked, failures = self._parked, self._failures
            self._results, self._done, self._release, self._parked = [], [], [], []
            self._failures = []
            gap = WRITE_GAP_BUSY if len(done) >= BUSY_BATCH else WRITE_GAP
            while results or done or parked or failures:
                try:
                    await self.inbox.finish_runs(results, done, parked, failures)
                    if failures or any(r.zap in self._gates for r in results):
                        self.wake.set()  # error zaps run on them; queued runs take freed slots
                    break
                except Exception as exc:
                    self.stats.inbox_errors += 1
                    self.stats.last_error = f"inbox: {type(exc).__name__}: {exc}"
                    log.warning("recording finished runs failed (%s); retrying", exc)
                    await asyncio.sleep(0.2)
            for seq, delay in release:
                await self._safely(self.inbox.release([seq], delay=delay))
            pending = any((self._results, self._done, self._release, self._parked, self._failures))
            if self._stopping and not pending and not self._tasks:
                return

    def _down(self, exc: BaseException) -> None:
        self.stats.infrastructure_errors += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        self._backoff = min(30.0, max(0.5, self._backoff * 2))
        log.warning("Prefect's server failed (%s); events wait in the inbox", exc)
