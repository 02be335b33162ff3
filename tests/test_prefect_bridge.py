"""What the bridge records for a step (flows/prefect_bridge.py: task runs made from their state
events, without Prefect's task engine) beside what Prefect's own task engine records for the
same step: a task that fails once and passes on its retry. On a Prefect upgrade this is the
test that shows what changed; the differences that are there by design are named below."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from prefect import flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from flows.compiler import run_with_history
from flows.events import Event
from flows.loader import load_zap_text

pytestmark = pytest.mark.usefixtures("prefect_api")

ATTEMPTS: dict[str, int] = {}


@task(name="call", retries=2, retry_delay_seconds=[0.2, 0.4])
def call(key: str) -> str:
    ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
    if ATTEMPTS[key] == 1:
        raise RuntimeError("attempt 1: the app answered 503")
    return "ok"


@flow(name="engine-reference")
def engine_reference(key: str) -> str:
    return call(key)


ZAP = """
zap: bridge-reference
trigger: {app: builtin, event: catch_hook}
steps:
  - id: call
    action: flaky.call
    retries: 2
    retry_delay: 0.2s
    input: {fail_times: 1, value: ok}
"""


async def _task_run(flow_run_id: Any) -> tuple[Any, list[Any]]:
    """The flow run's one task run, once final, and its states in order."""
    async with get_client() as client:
        deadline = time.monotonic() + 30
        while True:
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            if runs and runs[0].state and runs[0].state.is_final():
                states = await client.read_task_run_states(runs[0].id)
                if states and states[-1].is_final():
                    return runs[0], sorted(states, key=lambda s: s.timestamp)
            assert time.monotonic() < deadline, runs
            await asyncio.sleep(0.2)


def _shape(run: Any, states: list[Any]) -> dict[str, Any]:
    return {
        "states": [(s.type.value, s.name) for s in states],
        "final": (run.state.type.value, run.state.name),
        "run_count": run.run_count,
        "retries": run.empirical_policy.retries,
        "retry_delay": run.empirical_policy.retry_delay,
        "has_times": bool(run.start_time and run.end_time and run.total_run_time),
    }


async def test_the_bridge_records_a_retried_step_as_prefects_task_engine_does() -> None:
    engine_state = await asyncio.to_thread(engine_reference, "k", return_state=True)
    engine = _shape(*await _task_run(engine_state.state_details.flow_run_id))

    zap = load_zap_text(ZAP)
    bridge_state = await run_with_history(
        zap, Event(app="builtin", trigger="catch_hook", payload={})
    )
    bridge = _shape(*await _task_run(bridge_state.state_details.flow_run_id))
    print("engine:", engine, "\nbridge:", bridge)

    # By design: the bridge sends no Pending (the task run starts Running; one event fewer per
    # step for the server to record). Everything else is the engine's.
    engine_states = [s for s in engine["states"] if s != ("PENDING", "Pending")]
    assert bridge["states"] == engine_states
    # The zap's retry_delay 0.2s doubles per retry (its default retry_backoff): the same list
    # of delays as the task's.
    for key in ("final", "run_count", "retries", "retry_delay", "has_times"):
        assert bridge[key] == engine[key], key
