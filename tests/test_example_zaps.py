"""The example zaps in zaps/ run as shipped, with run history, against the CINNOX sandbox,
and the sandbox shows what they did."""

from __future__ import annotations

import asyncio

import pytest
from conftest import EXAMPLE_ZAPS

from connectors import registry
from flows.compiler import run_with_history
from flows.loader import load_zap_file
from flows.runtime import Event

pytest_plugins = ["cinnox_sandbox_fixtures"]
pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.fixture
def sandbox_connection(cinnox_sandbox, monkeypatch):
    """The examples' connection "sandbox" pointed at the test's sandbox, as the demo does."""
    monkeypatch.setenv("ZAPFLOW_CINNOX_SANDBOX_APP_ID", cinnox_sandbox.app_id)
    monkeypatch.setenv("ZAPFLOW_CINNOX_SANDBOX_APP_TOKEN", cinnox_sandbox.token)
    monkeypatch.setenv("ZAPFLOW_CINNOX_SANDBOX_BASE_URL", cinnox_sandbox.base_url)
    from flows import connections

    connections.forget("cinnox", "sandbox")
    return cinnox_sandbox


def run_sample(name: str, index: int):
    zap = load_zap_file(EXAMPLE_ZAPS / f"{name}.yaml").zap
    trigger = registry.trigger(zap.trigger.app, zap.trigger.event)
    event = Event(app=trigger.app, trigger=trigger.name, payload=zap.trigger.samples[index])
    return asyncio.run(run_with_history(zap, event))


def texts(sandbox, kind: str) -> list[tuple[str, str]]:
    out = []
    for item in sandbox.control.sent(kind):
        request, result = item["request"], item["result"]
        text = request.get("text") or request["messages"][0]["text"]
        out.append((result.get("to") or request.get("recipientNumber"), text))
    return out


def test_missed_enquiry_posts_a_follow_up_and_texts_the_customer(sandbox_connection):
    state = run_sample("missed-enquiry-follow-up", 0)
    assert state.is_completed(), state.message
    ((room, item),) = texts(sandbox_connection, "im")
    assert room == "Customer Care HK"
    assert "C100208" in item and "66b2d4f6a8c0e1f3a5b7c908" in item and "Gary Kwok" in item
    ((number, sms),) = texts(sandbox_connection, "sms")
    assert number.startswith("+852") and "sorry we missed your call" in sms


def test_status_change_goes_to_the_space_or_the_assignee(sandbox_connection):
    assert run_sample("status-change-im", 0).is_completed()
    assert run_sample("status-change-im", 1).is_completed()
    sent = dict(texts(sandbox_connection, "im"))
    assert "T-4821 escalated" in sent["Escalations"]
    assert sent["Tommy Siu"] == "T-4822 is now Resolved: Change delivery address"


def test_approved_request_texts_the_customer_and_rejected_does_not(sandbox_connection):
    approved = run_sample("approved-request-sms", 0)
    rejected = run_sample("approved-request-sms", 1)
    assert approved.is_completed() and rejected.name == "Filtered"
    ((number, sms),) = texts(sandbox_connection, "sms")
    assert number == "+85298765432"
    assert sms == "Hi Kelvin Lee, your request R-2291 is approved. Pick-up: Fri 27 Nov, 10:00."


def test_the_app_token_never_reaches_run_history(sandbox_connection):
    """Parameters, task runs and logs of a CINNOX run: rendered inputs and outputs are there,
    the App Token nowhere."""
    import json
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )

    state = run_sample("missed-enquiry-follow-up", 0)
    run_id = state.state_details.flow_run_id

    async def history() -> str:
        async with get_client() as client:
            deadline = time.monotonic() + 30
            while True:
                logs = await client.read_logs(
                    log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]))
                )
                if sum("input:" in log.message for log in logs) >= 4 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.3)
            run = await client.read_flow_run(run_id)
            tasks = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
            )
        parts = [run.model_dump_json(), *(t.model_dump_json() for t in tasks)]
        return json.dumps([*parts, *(log.message for log in logs)])

    recorded = asyncio.run(history())
    assert "C100208" in recorded and "6601b7e2a9c84d3f5e0d1a01" in recorded
    assert recorded.count("input:") >= 4
    assert sandbox_connection.token not in recorded
