"""A zap as a Prefect flow: a flow run per zap run (or per batch of them), a task run per step.

``run_zap`` is the one importable flow (deployments point at it: ``flows/compiler.py:run_zap``);
``compile_zap`` gives the same flow named after a zap. Each step runs as a task run named after
its step id (``flows/task_runs.py``), with the step's retries (exponential backoff with jitter)
and timeout; permanent errors (bad input, a refused request, rejected credentials) are not
retried. A zap whose filter does
not hold ends in the state "Filtered" (a kind of Completed), not Failed.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from prefect import Flow, flow
from prefect.client.schemas.objects import State
from prefect.context import AsyncClientContext, FlowRunContext
from prefect.states import Completed, Failed

from connectors._errors import ZapError
from flows.events import Event
from flows.model import Zap
from flows.plan import StepPlan, ZapPlan, plan_of
from flows.prefect_bridge import run_flow
from flows.runtime import Journal, RunOutcome, ZapRun
from flows.task_runs import close_waiting_task_run, run_step_as_task_run

RUN_JOURNAL: ContextVar[Journal | None] = ContextVar("zapflow_run_journal", default=None)
"""Set by ``zapflow run`` and ``replay`` around their flow run: the steps done before (a replay
from the failed step reads them from the run's checkpoints) and where this run's outcomes are
noted (recorded with its ledger row)."""

ZAPFLOW_TAG = "zapflow"
FILTERED = "Filtered"


class ZapRunFailed(ZapError):
    """A zap run ended with a failed step; carries what every step did."""

    def __init__(self, outcome: RunOutcome) -> None:
        super().__init__(outcome.message)
        self.outcome = outcome


def run_tags(zap: Zap) -> list[str]:
    return [ZAPFLOW_TAG, f"zap:{zap.zap}", f"app:{zap.trigger.app}"]


def run_name(zap: Zap, event: Event) -> str:
    return f"{zap.zap} ← {event.label}"


async def _ensure_tags(zap: Zap) -> None:
    """Deployment runs start with the deployment's tags; add the zap's own for the UI."""
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return
    wanted = run_tags(zap)
    if not set(wanted) <= set(ctx.flow_run.tags):
        merged = sorted(set(ctx.flow_run.tags) | set(wanted))
        await ctx.client.update_flow_run(ctx.flow_run.id, tags=merged)  # type: ignore[misc]


@dataclass
class EventRun:
    """How one zap ran on one event, inside whichever flow run recorded it."""

    event_id: str
    outcome: RunOutcome
    flow_run_id: str | None

    @property
    def failing_step(self) -> str | None:
        return next((s.id for s in self.outcome.steps if s.status == "failed"), None)


async def run_event(
    plan: ZapPlan,
    event: Event,
    *,
    dry_run: bool = False,
    per_event: bool = False,
    journal: Journal | None = None,
) -> EventRun:
    """Run the zap on one event inside the current flow run: each step a task run (with
    ``per_event``, named ``<step> ← <app.trigger> <event id's first 12>``); ``journal``: its
    step checkpoints."""
    ctx = FlowRunContext.get()
    flow_run_id = str(ctx.flow_run.id) if ctx and ctx.flow_run else None
    try:
        run = ZapRun(
            plan,
            event,
            run_id=flow_run_id if not per_event else None,
            dry_run=dry_run,
            journal=journal,
            # Parking needs somewhere to keep the run: the dispatcher's step checkpoints.
            can_park=journal is not None and journal.save is not None and journal.can_park,
        )
    except ZapError as exc:  # the event does not fit the trigger: this run fails, not the batch
        failed = RunOutcome("failed", [], f"{type(exc).__name__}: {exc}")
        return EventRun(event.id, failed, flow_run_id)
    event_ref = f"{event.app}.{event.trigger} {event.id[:12]}"
    run.wait_over = close_waiting_task_run

    async def as_task_run(step: StepPlan, context: dict[str, Any]) -> Any:
        return await run_step_as_task_run(
            step,
            context,
            run.base,
            name=f"{step.id} ← {event_ref}" if per_event else step.id,
            dry_run=dry_run,
        )

    # Named after the event, not tagged with it: a tag would show in the UI's filters but each
    # one is a related resource on every state event of every step.
    outcome = await run.execute(as_task_run)
    return EventRun(event.id, outcome, flow_run_id)


def batch_summary(results: list[EventRun]) -> State:
    """The final state of a flow run that carried many events."""
    counts: Counter[str] = Counter(r.outcome.status for r in results)
    parts = [
        f"{counts[s]} {s}" for s in ("completed", "filtered", "waiting", "failed") if counts[s]
    ]
    message = f"{len(results)} events: " + ", ".join(parts) if results else "no events"
    data = {r.event_id: r.outcome.status for r in results}
    if counts["failed"]:
        return Failed(message=message, data=data)
    return Completed(message=message, data=data)


@flow(name="zap", persist_result=False)
async def run_zap(
    zap: dict[str, Any],
    event: dict[str, Any] | None = None,
    dry_run: bool = False,
    events: list[dict[str, Any]] | None = None,
) -> Any:
    """Run a zap (its definition) on one event (``Event``) or on several (``events``).

    The deployments' entrypoint. On one event the flow run's state is the zap run's
    (Completed, Filtered or Failed); on many it is Failed if any of them failed.
    """
    plan = plan_of(Zap.model_validate(zap))
    await _ensure_tags(plan.zap)
    if events is not None:
        batch = [Event.from_json(e) for e in events]
        results = await asyncio.gather(*(run_event(plan, e, per_event=True) for e in batch))
        return batch_summary(list(results))
    if event is None:
        raise ZapError("run_zap needs an event, events or a feed")
    result = await run_event(
        plan, Event.from_json(event), dry_run=dry_run, journal=RUN_JOURNAL.get()
    )
    return flow_result(result.outcome)


def flow_result(outcome: RunOutcome) -> Any:
    """What a flow run that ran one zap run returns: its steps' outputs (the flow run is
    Completed), a Completed state named Filtered, or ``ZapRunFailed`` raised (Failed)."""
    if outcome.status == "failed":
        raise ZapRunFailed(outcome)
    summary = {"status": outcome.status, "message": outcome.message, "steps": outcome.outputs}
    if outcome.status == "filtered":
        return Completed(name=FILTERED, message=outcome.message, data=summary)
    return summary


@lru_cache(maxsize=1024)
def _named_flow(zap_id: str, version: str) -> Flow[..., Any]:
    return run_zap.with_options(name=zap_id, version=version)


def compile_zap(plan: ZapPlan) -> Flow[..., Any]:
    """The zap as a Prefect flow named after it, its version the zap's (a hash of its content:
    each flow run shows the version it ran); the definition travels as a parameter."""
    return _named_flow(plan.id, plan.version)


def prefect_session() -> AbstractAsyncContextManager[Any]:
    """Share one Prefect API client among the flow runs started inside it.

    Prefect's engine otherwise builds a client (and a TLS context) for every flow run,
    ~25-30 ms each on this machine.
    """
    return AsyncClientContext.get_or_create()


async def run_with_history(zap: Zap, event: Event, *, dry_run: bool = False) -> State:
    """Run a zap once, here, as a Prefect flow run named after the zap and the event.

    The flow run is created with its name and tags in one call (naming it from inside the run
    would cost the engine a second request per run).
    """
    flow = compile_zap(plan_of(zap))
    parameters = {
        "zap": zap.model_dump(mode="json", exclude_defaults=True),
        "event": event.to_json(),
        "dry_run": dry_run,
    }
    async with prefect_session() as session:
        flow_run = await session.client.create_flow_run(
            flow, name=run_name(zap, event), parameters=parameters, tags=run_tags(zap)
        )
        return await run_flow(flow, flow_run, parameters)
