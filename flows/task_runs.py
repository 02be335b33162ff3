"""A zap step as a Prefect task run, recorded without Prefect's task engine.

Prefect 3 records a task run from the state-change events its client emits (the server's
task-run recorder turns them into task runs and states); the engine around them (contexts,
transactions, result handling, hooks, telemetry) costs several milliseconds of CPU per task
run, which held zap runs to ~100-150/s on two cores while the steps' own work is a fraction of
that. So a step runs here directly, with the step's retry policy, and emits the same events the
engine would (Pending, Running, AwaitingRetry, Retrying, Completed / Failed) with the same task
run model, inside the zap's flow run: the UI shows the same task runs, states, retries and
logs. The events go out from a background thread and the server records them at its own pace,
so under a burst actions are not held back by the run history, which catches up behind them.

A step that ends within ``RUNNING_AFTER`` seconds of starting, on its first attempt, is
recorded by one event, its final state (its start time, end time and duration are in it); a
longer one shows Running from then on, and a step that retries records every state. Each event
costs the server its share of recording (the event itself, its related resources, the task
run's row and state) — the larger part of the server's work per zap run.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace
from datetime import timedelta
from typing import Any
from uuid import UUID

from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext
from prefect.states import (
    AwaitingRetry,
    Completed,
    Failed,
    Retrying,
    Running,
    Scheduled,
)

from connectors._contract import ActionContext
from connectors._errors import RunParked, ZapError
from flows.errors import is_retryable
from flows.model import StepPolicy
from flows.plan import StepPlan
from flows.prefect_bridge import StepTaskRun, jittered, prefect_now
from flows.runtime import Skipped, run_step
from flows.template_budget import step_deadline

SKIPPED = "Skipped"
WAITING = "Waiting"
log = logging.getLogger("zapflow.task_runs")
MAX_RETRY_AFTER = 300.0
"""The longest an app's Retry-After may hold a step's retry back (seconds)."""
_LOG_LIMIT = 4000


class StepTimedOut(ZapError, TimeoutError):
    """One attempt of a step took longer than its timeout (retryable)."""


def _clip(value: Any) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= _LOG_LIMIT else text[:_LOG_LIMIT] + "…"


def retry_delays(policy: StepPolicy) -> list[float]:
    """The wait before each retry (before jitter): retry_delay, times retry_backoff each time."""
    delay = policy.retry_delay.total_seconds() if policy.retry_delay else 0.0
    backoff = policy.retry_backoff or 1.0
    return [round(delay * backoff**i, 3) for i in range(policy.retries or 0)]


async def run_step_as_task_run(
    step: StepPlan,
    context: dict[str, Any],
    base: ActionContext,
    *,
    name: str,
    dry_run: bool = False,
) -> tuple[Any, Any] | Skipped:
    """Run one step (render, validate, call its action) as a task run of the current flow
    run, retrying transient errors under its policy; raises the step's last error."""
    policy = step.policy
    delays = retry_delays(policy)
    record = StepTaskRun(
        name, step.task_key, retries=policy.retries or 0, delays=delays, jitter=policy.retry_jitter
    )
    logger = record.logger
    timeout = policy.timeout.total_seconds() if policy.timeout else None
    record.set_state(Running(), defer=True)
    attempt = 0
    while True:
        try:
            async with asyncio.timeout(timeout):
                with step_deadline(timeout):  # the template's budget ends with the step too
                    result = await run_step(
                        step, context, replace(base, logger=logger), dry_run=dry_run
                    )
        except RunParked as park:
            when = park.resume_at.strftime("%Y-%m-%d %H:%M:%S UTC")
            logger.info("waits until %s: the run is parked, its slot free, until then", when)
            # Scheduled, named Waiting, with its time: the UI shows when it goes on.
            record.set_state(
                Scheduled(
                    scheduled_time=park.resume_at, name=WAITING, message=f"Waiting until {when}"
                )
            )
            park.checkpoint["task_run"] = str(record.task_run.id)
            raise
        except TimeoutError as exc:
            error: Exception = StepTimedOut(f"the step took longer than its timeout ({timeout} s)")
            error.__cause__ = exc
        except Exception as exc:
            error = exc
        else:
            if isinstance(result, Skipped):
                logger.info("skipped: %s", result.reason)
                record.set_state(Completed(name=SKIPPED, message=result.reason))
            else:
                # one log record, not two: the server stores every record of every step
                logger.info("input: %s\noutput: %s", _clip(result[0]), _clip(result[1]))
                record.set_state(Completed())
            return result
        if attempt >= len(delays) or not is_retryable(error):
            logger.error("failed: %s: %s", type(error).__name__, error)
            record.set_state(Failed(message=f"{type(error).__name__}: {error}"))
            raise error
        wait = await _wait_before_retry(error, delays[attempt], policy, logger, attempt)
        if wait > 0:
            record.set_state(AwaitingRetry(scheduled_time=prefect_now() + timedelta(seconds=wait)))
            await asyncio.sleep(wait)
        record.set_state(Retrying())
        attempt += 1


async def _wait_before_retry(
    error: Exception, delay: float, policy: StepPolicy, logger: Any, attempt: int
) -> float:
    """How long to wait before the next attempt: the app's Retry-After first (at most
    MAX_RETRY_AFTER, waited here), then the step's own delay with jitter."""
    retry_after = getattr(error, "retry_after", None)
    if retry_after:
        await asyncio.sleep(min(float(retry_after), MAX_RETRY_AFTER))
    if policy.retry_jitter and delay > 0:
        delay = jittered(delay, policy.retry_jitter)
    logger.info(
        "attempt %s failed with %s: %s - retry %s/%s %s",
        attempt + 1,
        type(error).__name__,
        error,
        attempt + 1,
        policy.retries,
        f"in {delay:.1f} s" if delay else "now",
    )
    return delay


async def close_waiting_task_run(
    saved: dict[str, Any], message: str, *, cancel: bool = False
) -> None:
    """End the task run of a step a run was parked in (its id is in the step's checkpoint):
    Completed when the run resumed after it, Cancelled when the run was cancelled. Recorded
    through the current flow run's client; the UI shows it in the flow run it parked in."""
    task_run_id = saved.get("task_run")
    ctx = FlowRunContext.get()
    if not task_run_id or ctx is None or ctx.client is None:
        return
    await set_task_run_final_state(ctx.client, task_run_id, message, cancel=cancel)


async def set_task_run_final_state(
    client: Any, task_run_id: str, message: str, *, cancel: bool = False
) -> None:
    """Set a recorded task run's final state (best effort: a failure is only logged)."""
    from prefect.states import Cancelled

    state: State[Any] = Cancelled(message=message) if cancel else Completed(message=message)
    try:
        await client.set_task_run_state(UUID(task_run_id), state, force=True)
    except Exception as exc:  # the run goes on; the UI shows the step still waiting
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status == 404:  # its process stopped before the server recorded it
            log.info("the waiting task run %s was never recorded; nothing to end", task_run_id)
        else:
            log.warning("could not end the waiting task run %s: %s", task_run_id, exc)
