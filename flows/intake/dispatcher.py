"""The dispatcher: claims committed events from the inbox and runs the zaps they trigger.

Each (event, zap) runs once: the inbox's run ledger is written before a run starts and closed
when it ends, so a dispatcher that crashes and restarts (or a second dispatcher sharing the
inbox) never runs a finished zap run again; events a dead dispatcher had claimed come back when
their lease expires. If Prefect's server is down or failing, events go back to the inbox and
wait, and the dispatcher backs off until the server answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flows.compiler import prefect_session, run_with_history
from flows.intake.events import StoredEvent
from flows.intake.inbox import Inbox
from flows.model import Zap
from flows.runtime import Event

log = logging.getLogger("zapflow.dispatcher")


def matching(zaps: list[Zap], event: StoredEvent) -> list[Zap]:
    """The enabled zaps an event triggers."""
    if event.zap is not None:
        return [z for z in zaps if z.zap == event.zap and z.enabled]
    return [
        z
        for z in zaps
        if z.enabled
        and z.trigger.app == event.app
        and z.trigger.event == event.trigger
        and z.trigger.connection == event.connection
    ]


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
        concurrency: int = 4,
        batch: int = 50,
        lease: float = 120.0,
        idle_poll: float = 1.0,
        worker: str | None = None,
    ) -> None:
        self.inbox, self.zaps = inbox, zaps
        self.concurrency, self.batch, self.lease, self.idle_poll = (
            concurrency,
            batch,
            lease,
            idle_poll,
        )
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}"
        self.wake = asyncio.Event()
        self.stats = DispatchStats()
        self._stopping = False
        self._running = False
        self._backoff = 0.0

    @property
    def alive(self) -> bool:
        return self._running and not self._stopping

    def stop(self) -> None:
        """Stop claiming; the batch in hand is finished (``run`` returns after it)."""
        self._stopping = True
        self.wake.set()

    async def run(self) -> None:
        self._running = True
        try:
            while not self._stopping:
                try:
                    claimed = await self.inbox.claim(
                        self.worker, limit=self.batch, lease=self.lease
                    )
                except Exception as exc:  # the inbox is busy or away: try again, never give up
                    self.stats.inbox_errors += 1
                    self.stats.last_error = f"inbox: {type(exc).__name__}: {exc}"
                    log.warning("claiming from the inbox failed (%s); retrying", exc)
                    await asyncio.sleep(min(5.0, 0.1 * 2 ** min(self.stats.inbox_errors, 6)))
                    continue
                if not claimed:
                    self.wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.wake.wait(), self.idle_poll)
                    continue
                try:
                    async with prefect_session():  # one API client for the whole batch
                        await self._dispatch(claimed)
                except Exception as exc:  # Prefect unreachable before any run could start
                    self._down(exc)
                    # If even this fails, the leases expire and the events come back anyway.
                    with contextlib.suppress(Exception):
                        await self.inbox.release([e.seq for e in claimed], delay=self._backoff)
                if self._backoff:
                    await asyncio.sleep(self._backoff)
        finally:
            self._running = False

    def _down(self, exc: Exception) -> None:
        self.stats.infrastructure_errors += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        self._backoff = min(30.0, max(0.5, self._backoff * 2))
        log.warning("Prefect's server failed (%s); events wait in the inbox", exc)

    async def _dispatch(self, events: list[StoredEvent]) -> None:
        gate = asyncio.Semaphore(self.concurrency)
        zaps = self.zaps()

        async def one(event: StoredEvent) -> None:
            async with gate:
                try:
                    pending = [await self._run_once(zap, event) for zap in matching(zaps, event)]
                    if any(pending):
                        # Another dispatcher is running one of them (or died doing so): look
                        # again after a while; its ledger row tells when it is finished or stale.
                        await self.inbox.release([event.seq], delay=self.lease / 4)
                        return
                except Exception as exc:  # Prefect down or failing: the event waits and retries
                    self._down(exc)
                    await self.inbox.release([event.seq], delay=self._backoff)
                    return
                self._backoff = 0.0
                await self.inbox.done([event.seq])

        await asyncio.gather(*(one(e) for e in events))

    async def _run_once(self, zap: Zap, event: StoredEvent) -> bool:
        """Run the zap on the event unless the ledger says it ran; True if it is running
        elsewhere (so the event is not finished yet)."""
        if not await self.inbox.start_run(event.id, zap.zap):
            if await self.inbox.run_state(event.id, zap.zap) == "running":
                return True
            self.stats.skipped += 1  # this zap already ran on this event: never twice
            return False
        started = time.perf_counter()
        try:
            state = await run_with_history(
                zap,
                Event(
                    id=event.id,
                    app=event.app,
                    trigger=event.trigger,
                    received_at=event.received_at,
                    payload=event.payload,
                ),
            )
        except BaseException:
            await self.inbox.abandon_run(event.id, zap.zap)
            raise
        name = (state.name or "unknown").lower()
        await self.inbox.finish_run(
            event.id, zap.zap, name, str(state.state_details.flow_run_id or "") or None
        )
        self.stats.runs += 1
        self.stats.by_state[name] = self.stats.by_state.get(name, 0) + 1
        log.info("%s on %s: %s in %.2f s", zap.zap, event.id, name, time.perf_counter() - started)
        return False
