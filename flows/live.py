"""Live flow runs: a zap's flow run that stays open and runs its events as they arrive.

Starting a Prefect flow run costs 150-400 ms and the server records at most a few dozen a
second; a task run inside a flow run that is already running starts at once, and the server
records well over a hundred a second. So the dispatcher does not start a flow run per event:
each zap gets a *live* flow run (named ``<zap> ← <app.trigger> live from <time>``) that takes
the zap's events as they come and runs each one's steps as task runs named
``<step> ← <event>`` (not tagged: Prefect checks each tag of each task run against its
concurrency limits, one API request per task run). It closes after ``idle`` seconds without
events, after ``max_events`` events or ``max_age`` seconds (so the UI shows finished runs), or
when the zap's definition changes; the next event opens a new one. Its final state counts its
events: Completed, or Failed when any of them failed (the failed step's task run shows its
retries).

A live flow run is driven here, not by Prefect's flow engine: it is created already Running
(one API request), its events start as soon as it exists, and its final state is set when it
closes. The engine would add its own start-up (proposing Running, contexts, hooks: 100-300 ms,
seconds on a busy machine) before the first event, which every event that opens a run — a
zap's first in a while — would wait through. For the same reason the live runs share one API
client for as long as they are served (a new one costs ~30 ms: its TLS context) and remember
each zap's flow id, so opening a run is that one request. Its steps' task runs are recorded as
``flows.task_runs`` records them, whichever way the flow run is driven.

Each live run runs up to the zap's ``concurrency`` events at once, and all of a process's live
runs together as many as its event loop keeps up with (``flows.loop_limit``).

One (event, zap) run is still one row in ``zapflow runs`` (the inbox's run ledger), which
names the flow run that recorded it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.objects import FlowRun, State
from prefect.logging.loggers import flow_run_logger
from prefect.states import Crashed

from flows.compiler import EventRun, batch_summary, compile_zap, run_event, run_tags
from flows.events import Event
from flows.loop_limit import LoopLimit
from flows.plan import ZapPlan
from flows.prefect_bridge import create_running_flow_run, flow_run_context
from flows.runtime import Journal

log = logging.getLogger("zapflow.live")


class FeedClosed(Exception):
    """The live flow run ended before it could run this event (it was not run)."""


@dataclass
class Feed:
    """The in-process queue between the dispatcher and one live flow run."""

    idle: float
    max_events: int
    max_age: float
    concurrency: int
    limit: LoopLimit | None = None
    """The serve process's runs at once, across its zaps (``flows.loop_limit``)."""
    queue: asyncio.Queue[tuple[Event, Journal | None, asyncio.Future[EventRun]]] = field(
        default_factory=asyncio.Queue
    )
    accepting: bool = True
    offered: int = 0
    opened: float = field(default_factory=time.monotonic)
    waiting: set[asyncio.Future[EventRun]] = field(default_factory=set)

    def offer(
        self, event: Event, journal: Journal | None = None
    ) -> asyncio.Future[EventRun] | None:
        """Hand the live run an event; None if it no longer takes events."""
        if not self.accepting:
            return None
        future: asyncio.Future[EventRun] = asyncio.get_running_loop().create_future()
        self.waiting.add(future)
        future.add_done_callback(self.waiting.discard)
        self.queue.put_nowait((event, journal, future))
        self.offered += 1
        if self.offered >= self.max_events:
            self.accepting = False
        return future

    def close(self) -> None:
        self.accepting = False
        self.queue.put_nowait(_CLOSE)  # type: ignore[arg-type]

    async def next(self) -> tuple[Event, Journal | None, asyncio.Future[EventRun]] | None:
        """The next event, or None once the feed is closed and empty."""
        while True:
            if not self.queue.empty():
                item = self.queue.get_nowait()
                if item is _CLOSE:
                    continue
                return item
            if not self.accepting:
                return None
            left = self.max_age - (time.monotonic() - self.opened)
            try:
                item = await asyncio.wait_for(self.queue.get(), max(0.0, min(self.idle, left)))
            except TimeoutError:
                self.accepting = False  # idle or old: whatever is queued still runs
                continue
            if item is _CLOSE:
                continue
            return item

    def fail_waiting(self, error: BaseException) -> None:
        for future in list(self.waiting):
            if not future.done():
                future.set_exception(error)


_CLOSE: Any = object()


async def serve_feed(feed: Feed, plan: ZapPlan) -> list[EventRun]:
    """The body of a live flow run: run the feed's events until it closes."""
    gate = asyncio.Semaphore(feed.concurrency)
    results: list[EventRun] = []
    running: set[asyncio.Task[None]] = set()

    async def one(event: Event, journal: Journal | None, future: asyncio.Future[EventRun]) -> None:
        try:
            result = await run_event(plan, event, per_event=True, journal=journal)
        except Exception as exc:  # the run's caller hears of it through its future
            if not future.done():
                future.set_exception(exc)
            return
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc)
            raise
        finally:
            gate.release()
            if feed.limit is not None:
                feed.limit.release()
        results.append(result)
        if not future.done():
            future.set_result(result)

    while (item := await feed.next()) is not None:
        await gate.acquire()
        if feed.limit is not None:
            await feed.limit.acquire()
        runner = asyncio.create_task(one(*item))
        running.add(runner)
        runner.add_done_callback(running.discard)
    if running:
        await asyncio.gather(*running, return_exceptions=True)
    return results


@dataclass
class _Live:
    plan: ZapPlan
    feed: Feed
    task: asyncio.Task[Any]


class LiveRuns:
    """The live flow runs of one dispatcher, one per zap at a time."""

    def __init__(
        self,
        *,
        idle: float = 5.0,
        max_events: int = 5000,
        max_age: float = 600.0,
        concurrency: int = 50,
        at_once: int | None = None,
    ) -> None:
        """``concurrency``: runs of one zap at once; ``at_once``: of all zaps, at most (the
        loop's lateness may hold them to fewer: ``flows.loop_limit``), None for no such limit."""
        self.idle, self.max_events, self.max_age = idle, max_events, max_age
        self.concurrency = concurrency
        self.limit = LoopLimit(at_once) if at_once else None
        self._live: dict[str, _Live] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._closing: set[asyncio.Task[Any]] = set()
        self._client: PrefectClient | None = None
        self._flow_ids: dict[str, UUID] = {}

    async def client(self) -> PrefectClient:
        """The API client the live runs share (opened on first use, closed by :meth:`close`)."""
        if self._client is None:
            client = get_client()
            await client.__aenter__()
            self._client = client
        return self._client

    async def run(self, plan: ZapPlan, event: Event, journal: Journal | None = None) -> EventRun:
        """Run the zap on the event in the zap's live flow run (opening one if needed), with
        ``journal``'s step checkpoints.

        Raises whatever kept the flow run from starting or running (e.g. Prefect's server is
        unreachable): the event then did not run.
        """
        while True:
            live = await self._current(plan)
            future = live.feed.offer(event, journal)
            if future is not None:
                return await future

    async def _current(self, plan: ZapPlan) -> _Live:
        lock = self._locks.setdefault(plan.id, asyncio.Lock())
        async with lock:
            live = self._live.get(plan.id)
            if live is not None and live.feed.accepting and not live.task.done():
                if live.plan is plan or live.plan.version == plan.version:
                    return live
                live.feed.close()  # the zap changed: its next events go to a new flow run
            live = await self._open(plan)
            self._live[plan.id] = live
            return live

    async def _open(self, plan: ZapPlan) -> _Live:
        zap = plan.zap
        feed = Feed(self.idle, self.max_events, self.max_age, self.concurrency, self.limit)
        flow = compile_zap(plan)
        parameters = {"zap": zap.model_dump(mode="json", exclude_defaults=True)}
        opened = datetime.now(UTC).strftime("%H:%M:%S")
        name = f"{zap.zap} ← {zap.trigger.app}.{zap.trigger.event} live from {opened}"
        client = await self.client()
        flow_run = await create_running_flow_run(
            client, self._flow_ids, flow, name, parameters, [*run_tags(zap), "live"]
        )
        context = flow_run_context(flow, flow_run, parameters, client)

        async def drive() -> State:
            try:
                with context:
                    results = await serve_feed(feed, plan)
                state: State = batch_summary(results)
            except BaseException as exc:
                state = Crashed(message=f"zapflow stopped running it: {type(exc).__name__}: {exc}")
                await _finish(client, flow_run, flow, state)
                raise
            finally:
                feed.accepting = False
                feed.fail_waiting(FeedClosed(f"the live flow run {flow_run.id} ended"))
            await _finish(client, flow_run, flow, state)
            return state

        return _Live(plan, feed, asyncio.create_task(drive(), name=f"live {zap.zap}"))

    async def close(self) -> None:
        """Stop taking events; wait for every live run to finish what it was given."""
        for live in self._live.values():
            live.feed.close()
        tasks = [live.task for live in self._live.values()]
        self._live.clear()
        if tasks:
            with contextlib.suppress(Exception):
                await asyncio.gather(*tasks, return_exceptions=True)
        if self.limit is not None:
            await self.limit.close()
        client, self._client = self._client, None
        if client is not None:
            await client.__aexit__(None, None, None)


async def _finish(client: PrefectClient, flow_run: FlowRun, flow: Any, state: State) -> None:
    """Set a live flow run's final state (its events have run whatever happens here)."""
    state.data = None  # the per-event outcomes are in the run ledger, not the run's result
    try:
        await asyncio.shield(client.set_flow_run_state(flow_run.id, state, force=True))
        flow_run_logger(flow_run, flow).info("Finished in state %s", state)
    except Exception as exc:  # e.g. Prefect's server went away: the UI shows it still Running
        log.warning("could not set the final state of live flow run %s: %s", flow_run.id, exc)
