"""A zap as a Prefect flow: a flow run per zap run (or per batch of them), a task run per step.

``run_zap`` is the one importable flow (deployments point at it: ``flows/compiler.py:run_zap``);
``compile_zap`` gives the same flow named after a zap. Each step runs as a task named after its
step id, with the step's retries (exponential backoff with jitter) and timeout; permanent errors
(bad input, a refused request, rejected credentials) are not retried. A zap whose filter does
not hold ends in the state "Filtered" (a kind of Completed), not Failed.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from prefect import Flow, Task, flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State
from prefect.context import AsyncClientContext, FlowRunContext
from prefect.flow_engine import run_flow_async
from prefect.states import Completed, Failed
from prefect.utilities.annotations import quote

from connectors._contract import ActionContext
from flows.errors import ZapError, is_retryable
from flows.model import ActionStep, StepPolicy, Zap, effective_policy, step_connection
from flows.runtime import Event, RunOutcome, Skipped, ZapRun, run_step

ZAPFLOW_TAG = "zapflow"
FILTERED = "Filtered"
SKIPPED = "Skipped"
_LOG_LIMIT = 4000


class ZapRunFailed(ZapError):
    """A zap run ended with a failed step; carries what every step did."""

    def __init__(self, outcome: RunOutcome) -> None:
        super().__init__(outcome.message)
        self.outcome = outcome


def run_tags(zap: Zap) -> list[str]:
    return [ZAPFLOW_TAG, f"zap:{zap.zap}", f"app:{zap.trigger.app}"]


MAX_RETRY_AFTER = 300.0
"""The longest an app's Retry-After may hold a step's retry back (seconds)."""


async def _retry_allowed(task: Any, task_run: Any, state: State) -> bool:
    """Retry transient errors only; when the app said how long to wait (Retry-After), wait
    that long first (at most MAX_RETRY_AFTER), then the step's own retry delay."""
    error = state.data if isinstance(state.data, BaseException) else None
    if error is not None and not is_retryable(error):
        return False
    wait = getattr(error, "retry_after", None)
    if wait:
        await asyncio.sleep(min(float(wait), MAX_RETRY_AFTER))
    return True


def _clip(value: Any) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= _LOG_LIMIT else text[:_LOG_LIMIT] + "…"


@task(cache_policy=NO_CACHE, persist_result=False)
async def zap_step(
    step: ActionStep,
    context: dict[str, Any],
    base: dict[str, Any],
    dry_run: bool = False,
    connection_name: str | None = None,
    event_ref: str = "",
) -> Any:
    """One zap step: render its input, call its action, return (input, output)."""
    logger = get_run_logger()
    result = await run_step(
        step,
        context,
        ActionContext(**base, logger=logger),
        dry_run=dry_run,
        connection_name=connection_name,
    )
    if isinstance(result, Skipped):
        logger.info("skipped: %s", result.reason)
        return Completed(name=SKIPPED, message=result.reason)
    logger.info("input: %s", _clip(result[0]))
    logger.info("output: %s", _clip(result[1]))
    return result


@lru_cache(maxsize=1024)
def _step_task(step_id: str, policy_json: str, per_event: bool = False) -> Task[..., Any]:
    """The step's task; ``per_event``: its runs are named after the event too (in a flow run
    that carries many events)."""
    policy = StepPolicy.model_validate_json(policy_json)
    retries = policy.retries or 0
    delay = policy.retry_delay.total_seconds() if policy.retry_delay else 0.0
    backoff = policy.retry_backoff or 1.0
    return zap_step.with_options(
        name=step_id,
        task_run_name=f"{step_id} ← {{event_ref}}" if per_event else step_id,
        retries=retries,
        retry_delay_seconds=[round(delay * backoff**i, 3) for i in range(retries)] or 0,
        retry_jitter_factor=policy.retry_jitter or 0.0,
        timeout_seconds=policy.timeout.total_seconds() if policy.timeout else None,
        retry_condition_fn=_retry_allowed,
    )


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
    model: Zap, event: Event, *, dry_run: bool = False, per_event: bool = False
) -> EventRun:
    """Run the zap on one event inside the current flow run: each step a task run (with
    ``per_event``, named ``<step> ← <app.trigger> <event id's first 12>``)."""
    ctx = FlowRunContext.get()
    flow_run_id = str(ctx.flow_run.id) if ctx and ctx.flow_run else None
    try:
        run = ZapRun(model, event, run_id=flow_run_id if not per_event else None, dry_run=dry_run)
    except ZapError as exc:  # the event does not fit the trigger: this run fails, not the batch
        failed = RunOutcome("failed", [], f"{type(exc).__name__}: {exc}")
        return EventRun(event.id, failed, flow_run_id)
    base = {
        "zap_id": model.zap,
        "step_id": "",
        "run_id": run.run_id,
        "event_id": event.id,
        "testing": dry_run,
    }
    event_ref = f"{event.app}.{event.trigger} {event.id[:12]}"

    async def through_task(step: ActionStep, context: dict[str, Any]) -> Any:
        policy = effective_policy(model, step).model_dump_json()
        task = _step_task(step.id, policy, per_event)
        # quote(): Prefect need not walk the run's context looking for futures to resolve
        # (there are none), which it would otherwise do for every step of every event.
        state = await task(
            quote(step),
            quote(context),
            quote(base),
            dry_run,
            step_connection(model, step),
            event_ref,
            return_state=True,
        )
        if state.name == SKIPPED:
            return Skipped(state.message or "")
        return await state.result()  # raises the step's error if it failed

    # Named after the event, not tagged with it: Prefect checks every tag of a task run against
    # its tag concurrency limits with an API request per task run, which took zap runs from
    # hundreds a second to 5 (measured with bench/bench_intake.py).
    outcome = await run.execute(through_task)
    return EventRun(event.id, outcome, flow_run_id)


def batch_summary(results: list[EventRun]) -> State:
    """The final state of a flow run that carried many events."""
    counts: Counter[str] = Counter(r.outcome.status for r in results)
    parts = [f"{counts[s]} {s}" for s in ("completed", "filtered", "failed") if counts[s]]
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
    feed: str | None = None,
) -> Any:
    """Run a zap (its definition) on one event (``Event``), on several (``events``), or on the
    events an in-process feed hands it while it stays open (``feed``: see ``flows.live``).

    The deployments' entrypoint. On one event the flow run's state is the zap run's
    (Completed, Filtered or Failed); on many it is Failed if any of them failed.
    """
    model = Zap.model_validate(zap)
    await _ensure_tags(model)
    if feed is not None:
        from flows.live import serve_feed

        return batch_summary(await serve_feed(feed, model))
    if events is not None:
        batch = [Event.model_validate(e) for e in events]
        results = await asyncio.gather(*(run_event(model, e, per_event=True) for e in batch))
        return batch_summary(list(results))
    if event is None:
        raise ZapError("run_zap needs an event, events or a feed")
    result = await run_event(model, Event.model_validate(event), dry_run=dry_run)
    outcome = result.outcome
    if outcome.status == "failed":
        raise ZapRunFailed(outcome)
    summary = {"status": outcome.status, "message": outcome.message, "steps": outcome.outputs}
    if outcome.status == "filtered":
        return Completed(name=FILTERED, message=outcome.message, data=summary)
    return summary


@lru_cache(maxsize=1024)
def _named_flow(zap_id: str) -> Flow[..., Any]:
    return run_zap.with_options(name=zap_id)


def compile_zap(zap: Zap) -> Flow[..., Any]:
    """The zap as a Prefect flow named after it (the definition travels as a parameter)."""
    return _named_flow(zap.zap)


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
    flow = compile_zap(zap)
    parameters = {
        "zap": zap.model_dump(mode="json", exclude_defaults=True),
        "event": event.model_dump(mode="json"),
        "dry_run": dry_run,
    }
    async with prefect_session() as session:
        flow_run = await session.client.create_flow_run(
            flow, name=run_name(zap, event), parameters=parameters, tags=run_tags(zap)
        )
        state = await run_flow_async(
            flow, flow_run=flow_run, parameters=parameters, return_type="state"
        )
    assert isinstance(state, State)
    return state
