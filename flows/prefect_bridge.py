"""Every use zapflow makes of Prefect below its documented public surface, in one place.

zapflow records a zap's steps as task runs without Prefect's task engine, and keeps a zap's flow
run open while its events arrive (``flows.task_runs``, ``flows.live`` say why: the engine's CPU
per task run). That takes these internals, each wrapped here and used nowhere else
(``tests/test_house.py`` fails CI on a use elsewhere); Prefect is pinned
exactly (pyproject.toml, requirements.lock) and ``zapflow serve`` warns on another version
(``flows.server.version_warnings``):

- ``prefect.utilities.engine.emit_task_run_state_change_event`` — a step's states go to the
  server as the events Prefect's task engine would emit; the server's task-run recorder makes
  the task run from them (``StepTaskRun``).
- ``prefect.client.schemas.objects.TaskRun`` built by hand — the model those events carry
  (``StepTaskRun``).
- ``prefect.types._datetime.now`` — Prefect's own datetime type for state times, which differs
  by Python version (``prefect_now``).
- ``prefect.utilities.math.clamped_poisson_interval`` — retry jitter as Prefect computes it
  (``jittered``).
- ``POST /flows/`` and ``POST /flow_runs/`` through ``PrefectClient.request``, with
  ``prefect.client.schemas.actions``' ``FlowCreate`` and ``FlowRunCreate`` — a flow run
  created Running in one request once the flow's id is known; the client's
  ``create_flow_run`` asks for the flow id every time (``create_running_flow_run``).
- ``prefect.context.FlowRunContext`` built by hand, with ``prefect.results.get_result_store``
  — what Prefect's engine puts in context for a flow's body, so a live flow run's task runs and
  logs belong to it (``flow_run_context``).
- ``prefect.flow_engine.run_flow_async`` — a compiled flow run in a flow run made beforehand
  with its name and tags (``run_flow``, for ``zapflow run``).
- ``prefect.client.schemas.actions.WorkPoolCreate`` — the model ``PrefectClient.create_work_pool``
  takes, for the work pool ``zapflow deploy`` puts zaps on (``ensure_work_pool``).
- ``send`` and ``_drain`` of ``prefect.events.worker.EventsWorker`` and
  ``prefect.logging.handlers.APILogWorker`` wrapped — a serve's events and log records reach
  those sender threads in bunches, and a drain hands over what is held first
  (``hand_over_in_bunches``).

Upgrading Prefect: read each of these in the new release, pin it, and run the whole suite (its
run-history tests read back what the server recorded).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import httpx
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import FlowCreate, FlowRunCreate, WorkPoolCreate
from prefect.client.schemas.objects import (
    Flow,
    FlowRun,
    FlowRunPolicy,
    State,
    TaskRun,
    TaskRunPolicy,
)
from prefect.context import FlowRunContext
from prefect.events.worker import EventsWorker
from prefect.flow_engine import run_flow_async
from prefect.logging.handlers import APILogWorker
from prefect.logging.loggers import task_run_logger
from prefect.results import get_result_store
from prefect.states import Pending, Running, to_state_create
from prefect.types._datetime import now
from prefect.utilities.engine import emit_task_run_state_change_event
from prefect.utilities.math import clamped_poisson_interval

log = logging.getLogger("zapflow.task_runs")
RUNNING_AFTER = 1.0
"""A step still running this long after it started is shown Running (seconds)."""


HAND_OVER_EVERY = 0.05
"""How long a serve holds its events and log records before handing them to Prefect's sender
threads together (seconds)."""


class _Handover:
    """Events and log records reach Prefect's sender threads in bunches.

    Prefect's ``EventsWorker`` and ``APILogWorker`` take each item from a thread queue their
    loop waits on: an item that finds the queue empty wakes a thread to take it and then that
    loop, and under a burst, as the senders keep up, that is nearly every item. Profiled under
    bench_topology's burst, that hand-over (the queue's put and the wake-up) took 13 % of a
    worker's time, one event and one log record per step. Held here for up to
    ``HAND_OVER_EVERY`` seconds and handed over together, a bunch costs one wake-up; the
    history is as complete, and arrives at most that much later (a crash loses what is held,
    as it loses what Prefect's own queues hold).

    Each item is handed over in the context it was sent in (the events worker reads a run's
    related resources from it), in the order sent; a drain of either service (at exit, or
    Prefect's own) hands over what is held first, so nothing held is left behind."""

    def __init__(self) -> None:
        self._held: list[tuple[contextvars.Context, Callable[[Any, Any], Any], Any, Any]] = []
        self._lock = threading.Lock()
        self._handing = threading.Lock()  # one hand-over at a time: the order is kept
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def send(self, original: Callable[[Any, Any], Any], service: Any, item: Any) -> None:
        with self._lock:
            self._held.append((contextvars.copy_context(), original, service, item))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="zapflow-handover", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(HAND_OVER_EVERY)
            self._wake.clear()  # before taking what is held: an item sent after is woken for
            self.hand_over()

    def hand_over(self) -> None:
        """Hand everything held to Prefect's senders now."""
        with self._handing:
            with self._lock:
                held, self._held = self._held, []
            for context, original, service, item in held:
                try:
                    context.run(original, service, item)
                except Exception as exc:  # a stopped service: as Prefect's own send would
                    name = type(service).__name__
                    log.warning("Prefect's %s did not take an item: %s", name, exc)


_handover = _Handover()


def hand_over_in_bunches() -> None:
    """From now on this process hands its events and log records to Prefect's sender threads
    in bunches (``_Handover``); idempotent. For processes that run zaps under load
    (``zapflow serve``)."""
    for service in (EventsWorker, APILogWorker):
        bunch(service)


def bunch(service: type) -> None:
    """Items sent to ``service`` (a Prefect queue service) are held and handed over in bunches;
    its drain hands over what is held first."""
    if service.__dict__.get("_zapflow_bunched"):
        return
    send, drain = service.send, service._drain  # type: ignore[attr-defined]

    def bunched_send(self: Any, item: Any) -> None:
        _handover.send(send, self, item)

    def draining(self: Any, at_exit: bool = False) -> Any:
        _handover.hand_over()
        return drain(self, at_exit=at_exit)

    service.send = bunched_send  # type: ignore[attr-defined]
    service._drain = draining  # type: ignore[attr-defined]
    service._zapflow_bunched = True  # type: ignore[attr-defined]


def prefect_now() -> datetime:
    """Now, in the datetime type Prefect's states use."""
    return now("UTC")


def jittered(delay: float, factor: float) -> float:
    """A retry delay with Prefect's jitter (``retry_jitter_factor``)."""
    return float(clamped_poisson_interval(delay, clamping_factor=factor))


class StepTaskRun:
    """One step's task run: its Prefect model, its states as events, its logger."""

    def __init__(
        self, name: str, task_key: str, *, retries: int, delays: list[float], jitter: float | None
    ) -> None:
        ctx = FlowRunContext.get()
        self.flow_run_id = ctx.flow_run.id if ctx and ctx.flow_run else None
        pending: State[Any] = Pending()
        self.task_run = TaskRun(
            id=uuid4(),
            name=name,
            flow_run_id=self.flow_run_id,
            task_key=task_key,
            dynamic_key=uuid4().hex,
            empirical_policy=TaskRunPolicy(
                retries=retries, retry_delay=delays or 0, retry_jitter_factor=jitter
            ),
            expected_start_time=pending.timestamp,
            state=pending,
            state_id=pending.id,
            state_type=pending.type,
            state_name=pending.name,
        )
        self._last_event: Any = None
        self._unsent: tuple[State, State] | None = None  # (initial, validated), not yet emitted
        self._timer: asyncio.TimerHandle | None = None
        # No event for Pending: the task run starts Running at once, and its first event
        # creates it on the server; one event fewer per step for the server to record.
        self.logger: logging.LoggerAdapter[Any] = task_run_logger(
            self.task_run,
            flow_run=ctx.flow_run if ctx else None,
            flow=ctx.flow if ctx else None,
            task_name=task_key.split(".")[-1],
        )

    def set_state(self, state: State, *, defer: bool = False) -> None:
        """The task run's new state, emitted at once or (``defer``) only if the task run is
        still in it ``RUNNING_AFTER`` seconds later, or moves on to a state that is not final."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._unsent is not None and not state.is_final():
            self._send_unsent()  # while the task run is still in that state
        self._unsent = None
        run = self.task_run
        last = run.state
        assert last is not None
        if state.timestamp <= last.timestamp:
            state.timestamp = last.timestamp + timedelta(microseconds=1)
        if last.is_running():
            run.total_run_time += state.timestamp - last.timestamp
        if state.is_running():
            run.run_count += 1
            # as Prefect's engine does (its DateTime type differs by Python version)
            run.start_time = run.start_time or state.timestamp  # type: ignore[assignment]
        if state.is_final():
            run.end_time = state.timestamp  # type: ignore[assignment]
        run.state, run.state_id, run.state_type, run.state_name = (
            state,
            state.id,
            state.type,
            state.name,
        )
        state.state_details.task_run_id = run.id
        state.state_details.flow_run_id = self.flow_run_id
        if defer:
            self._unsent = (last, state)
            self._timer = asyncio.get_running_loop().call_later(RUNNING_AFTER, self._send_unsent)
            return
        self._emit(last, state)

    def _send_unsent(self) -> None:
        self._timer = None
        if self._unsent is not None:
            unsent, self._unsent = self._unsent, None
            self._emit(*unsent)

    def _emit(self, initial: State, validated: State) -> None:
        try:
            self._last_event = emit_task_run_state_change_event(
                task_run=self.task_run,
                initial_state=initial,
                validated_state=validated,
                follows=self._last_event,
            )
        except Exception as exc:
            # Recording is the history's business: it never changes how the step ended (an
            # SMS that went out is not marked failed because its state could not be sent).
            log.warning(
                "the state %s of task run %r could not be recorded: %s: %s",
                validated.name,
                self.task_run.name,
                type(exc).__name__,
                exc,
            )


async def create_running_flow_run(
    client: PrefectClient,
    flow_ids: dict[str, UUID],
    flow: Any,
    name: str,
    parameters: dict[str, Any],
    tags: list[str],
) -> FlowRun:
    """``PrefectClient.create_flow_run``, Running from the start, in one request once the
    flow's id is known (``flow_ids`` caches it by flow name)."""
    known = flow_ids.get(flow.name)
    flow_id = known
    if flow_id is None:
        reply = await client.request(
            "POST", "/flows/", json=FlowCreate(name=flow.name).model_dump(mode="json")
        )
        flow_id = flow_ids[flow.name] = Flow.model_validate(reply.json()).id
    create = FlowRunCreate(
        flow_id=flow_id,
        flow_version=flow.version,
        name=name,
        parameters=parameters,
        tags=tags,
        state=to_state_create(Running()),
        empirical_policy=FlowRunPolicy(
            retries=flow.retries, retry_delay=int(flow.retry_delay_seconds or 0)
        ),
    )
    try:
        reply = await client.request(
            "POST", "/flow_runs/", json=create.model_dump(mode="json", exclude_unset=True)
        )
    except httpx.HTTPStatusError as exc:
        if known is None or exc.response.status_code >= 500:
            raise
        # The flow was deleted (in the UI, say) since it was looked up: look it up again.
        flow_ids.pop(flow.name, None)
        return await create_running_flow_run(client, flow_ids, flow, name, parameters, tags)
    flow_run = FlowRun.model_validate(reply.json())
    flow_run.parameters = parameters
    return flow_run


def flow_run_context(
    flow: Any, flow_run: FlowRun, parameters: dict[str, Any], client: PrefectClient
) -> FlowRunContext:
    """What Prefect's engine would put in context for the flow's body: the steps' task runs and
    their events (with the flow run, flow and tags as related resources) are recorded in this
    flow run."""
    return FlowRunContext(
        flow=flow,
        flow_run=flow_run,
        parameters=parameters,
        client=client,
        task_runner=flow.task_runner,
        result_store=get_result_store(),
        persist_result=False,
    )


async def run_flow(flow: Any, flow_run: FlowRun, parameters: dict[str, Any]) -> State:
    """Run ``flow`` in ``flow_run`` (made beforehand with its name and tags); its final state."""
    state = await run_flow_async(
        flow, flow_run=flow_run, parameters=parameters, return_type="state"
    )
    assert isinstance(state, State)
    return state


async def ensure_work_pool(client: PrefectClient, name: str, kind: str = "process") -> bool:
    """The work pool ``name`` exists (made, of type ``kind``, if it did not); True if made."""
    from prefect.exceptions import ObjectNotFound

    try:
        await client.read_work_pool(name)
        return False
    except ObjectNotFound:
        await client.create_work_pool(WorkPoolCreate(name=name, type=kind))
        return True
