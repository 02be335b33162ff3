"""Live flow runs as the Prefect UI shows them: a zap's events run in one open flow run (Running
while it is open), each step a task run of that flow run with its logs and the run's tags, its
final state counting the events; a run stopped mid-way is Crashed, not left Running."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)

from flows.compiler import prefect_session
from flows.events import Event
from flows.live import FeedClosed, LiveRuns
from flows.loader import load_zap_text
from flows.plan import plan_of

pytestmark = pytest.mark.usefixtures("prefect_api")

ZAP = """
zap: {zap}
trigger: {{app: builtin, event: catch_hook}}
steps:
  - id: call
    action: flaky.call
    retries: 0
    input:
      value: "{{{{ trigger.name }}}}"
      permanent: "{{{{ trigger.refuse | default(false) }}}}"
  - id: wait
    action: builtin.delay
    input: {{for: "{{{{ trigger.wait | default('0s') }}}}"}}
"""


def event(**payload: Any) -> Event:
    return Event(app="builtin", trigger="catch_hook", payload=payload)


async def task_runs_of(flow_run_id: Any, count: int, timeout: float = 20) -> list[Any]:
    """The flow run's task runs once ``count`` of them are recorded in a final state."""
    async with get_client() as client:
        deadline = time.monotonic() + timeout
        while True:
            found = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            done = [t for t in found if t.state and t.state.is_final()]
            if len(done) >= count or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.2)


async def test_a_live_run_records_its_events_steps_and_outcome():
    zap = load_zap_text(ZAP.format(zap="live-outcome"))
    runs = LiveRuns(idle=5)
    async with prefect_session(), get_client() as client:
        first = await runs.run(plan_of(zap), event(name="ada", wait="1s"))
        flow_run_id = first.flow_run_id
        assert first.outcome.status == "completed" and flow_run_id
        while_open = await client.read_flow_run(flow_run_id)
        assert while_open.state and while_open.state.name == "Running"
        refused = await runs.run(plan_of(zap), event(name="bob", refuse=True))
        assert refused.flow_run_id == flow_run_id and refused.outcome.status == "failed"
        await runs.close()

        flow_run = await client.read_flow_run(flow_run_id)
        assert flow_run.state and flow_run.state.type.value == "FAILED"
        assert flow_run.state.message == "2 events: 1 completed, 1 failed"
        assert flow_run.name.startswith("live-outcome ← builtin.catch_hook live from ")
        assert {"zapflow", "zap:live-outcome", "app:builtin", "live"} <= set(flow_run.tags)
        assert flow_run.start_time and flow_run.end_time and flow_run.run_count == 1
        assert flow_run.parameters["zap"]["zap"] == "live-outcome"

        steps = await task_runs_of(flow_run_id, 3)
        by_name = {t.name: t for t in steps}
        call_ok = by_name[f"call ← builtin.catch_hook {first.event_id[:12]}"]
        call_refused = by_name[f"call ← builtin.catch_hook {refused.event_id[:12]}"]
        assert call_ok.state.name == "Completed" and call_refused.state.name == "Failed"
        assert f"wait ← builtin.catch_hook {first.event_id[:12]}" in by_name
        assert {str(t.flow_run_id) for t in steps} == {flow_run_id}

        deadline = time.monotonic() + 20
        while True:  # the steps' logs reach the server in batches
            logs = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
            )
            texts = [(log.task_run_id, log.message) for log in logs]
            if len(texts) >= 3 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert (
            call_ok.id,
            'input: {"value": "ada", "permanent": false}\noutput: {"value": "ada", "attempts": 1}',
        ) in texts
        assert any(task == call_refused.id and "invalid recipient" in text for task, text in texts)
        assert any(
            task is None and text.startswith("Finished in state Failed") for task, text in texts
        )


async def test_a_changed_zap_gets_a_new_live_run():
    zap = load_zap_text(ZAP.format(zap="live-changed"))
    runs = LiveRuns(idle=5)
    async with prefect_session(), get_client() as client:
        before = await runs.run(plan_of(zap), event(name="a"))
        changed = zap.model_copy(update={"description": "now described"})
        after = await runs.run(plan_of(changed), event(name="b"))
        assert after.flow_run_id != before.flow_run_id
        await runs.close()
        old = await client.read_flow_run(before.flow_run_id)
        assert old.state and old.state.name == "Completed"
        assert old.state.message == "1 events: 1 completed"


async def test_a_live_run_stopped_midway_is_crashed_and_its_waiting_events_not_run():
    zap = load_zap_text(ZAP.format(zap="live-crash"))
    runs = LiveRuns(idle=5)
    async with prefect_session(), get_client() as client:
        slow = asyncio.create_task(runs.run(plan_of(zap), event(name="slow", wait="30s")))
        deadline = time.monotonic() + 20
        while "live-crash" not in runs._live:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        live = runs._live["live-crash"]
        await asyncio.sleep(0.5)
        live.task.cancel()  # what stopping zapflow's loop does to a run still going
        with pytest.raises((FeedClosed, asyncio.CancelledError)):
            await slow
        with pytest.raises(asyncio.CancelledError):
            await live.task
        flow_runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name={"like_": "live-crash ← "})
        )
        (crashed,) = flow_runs
        assert crashed.state and crashed.state.type.value == "CRASHED"
        assert "CancelledError" in (crashed.state.message or "")


async def test_a_zaps_flow_deleted_while_served_is_made_again_for_its_next_live_run():
    """Someone deletes the zap's flow (and its runs) in the Prefect UI while zapflow serves:
    the flow id remembered for opening live runs is stale, and the next run makes a new one."""
    zap = load_zap_text(ZAP.format(zap="live-flow-deleted"))
    runs = LiveRuns(idle=0.2)
    async with get_client() as client:
        first = await runs.run(plan_of(zap), event(name="a"))
        old = await client.read_flow_run(first.flow_run_id)
        await asyncio.sleep(0.5)  # that live run closes
        await client.delete_flow(old.flow_id)
        again = await runs.run(plan_of(zap), event(name="b"))
        assert again.outcome.status == "completed"
        new = await client.read_flow_run(again.flow_run_id)
        assert new.flow_id != old.flow_id
        assert (await client.read_flow(new.flow_id)).name == "live-flow-deleted"
        await runs.close()


async def test_a_quick_step_is_recorded_by_its_final_state_and_a_slow_one_shows_running():
    """One event per quick step for the server to record; a step still going after a second
    is shown Running while it runs."""
    zap = load_zap_text(ZAP.format(zap="live-running"))
    runs = LiveRuns(idle=5)
    async with get_client() as client:
        slow = asyncio.create_task(runs.run(plan_of(zap), event(name="ada", wait="4s")))
        deadline = time.monotonic() + 15
        while True:
            found = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(name={"like_": "live-running ← "})
            )
            waiting = [t for t in found if t.name.startswith("wait ← ")]
            if waiting and waiting[0].state and waiting[0].state.name == "Running":
                break
            assert time.monotonic() < deadline and not slow.done(), "never shown Running"
            await asyncio.sleep(0.1)
        done = await slow
        await runs.close()
        steps = {t.name.split(" ")[0]: t for t in await task_runs_of(done.flow_run_id, 2)}
        quick = [s.name for s in await client.read_task_run_states(steps["call"].id)]
        assert quick == ["Completed"]
        assert steps["call"].start_time and steps["call"].end_time
        slow_states = [s.name for s in await client.read_task_run_states(steps["wait"].id)]
        assert slow_states == ["Running", "Completed"]
        assert steps["wait"].total_run_time.total_seconds() >= 3.9


async def test_a_state_that_cannot_be_recorded_never_changes_how_the_step_ended(
    monkeypatch: Any, caplog: Any
) -> None:
    """Recording a step's final state fails (Prefect's events client broken): the step that
    acted stays completed, its action called once, and the failure is logged."""
    from conftest import ATTEMPTS

    import flows.prefect_bridge as bridge

    real = bridge.emit_task_run_state_change_event

    def broken(**kwargs: Any) -> Any:
        if kwargs["validated_state"].is_completed():
            raise RuntimeError("the events client is gone")
        return real(**kwargs)

    monkeypatch.setattr(bridge, "emit_task_run_state_change_event", broken)
    zap = load_zap_text(ZAP.format(zap="live-unrecorded"))
    runs = LiveRuns(idle=1)
    before = sum(ATTEMPTS.values())
    async with prefect_session():
        result = await runs.run(plan_of(zap), event(name="carol"))
        await runs.close()
    assert result.outcome.status == "completed"
    assert sum(ATTEMPTS.values()) == before + 1  # the action ran once, not retried
    assert "could not be recorded: RuntimeError: the events client is gone" in caplog.text
