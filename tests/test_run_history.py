"""A zap run from the command line, as the Prefect server records it.

One Prefect server serves the whole session; each test runs `zapflow run` / `runs` / `replay`
the way a user does and then reads the server's history through Prefect's client.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flows.cli import app

pytestmark = pytest.mark.usefixtures("prefect_api")

ZAP = """\
zap: {zap_id}
description: Greet big orders, route them, and call a flaky app
trigger:
  app: builtin
  event: catch_hook
filter:
  - "trigger.total >= 10"
defaults:
  retry_delay: 0.05s
  retry_jitter: 0
steps:
  - id: name
    action: builtin.format_text
    input:
      transform: titlecase
      value: "{{{{ trigger.customer }}}}"
  - id: wait
    action: builtin.delay
    input:
      for: 0.2s
  - id: team
    action: builtin.lookup
    input:
      key: "{{{{ trigger.region }}}}"
      table: {{HK: hk-sales, SG: sg-sales}}
      fallback: global
  - id: route
    paths:
      - name: vip
        when: "trigger.total > 100"
        steps:
          - id: vip_call
            action: flaky.call
            retries: 3
            input:
              fail_times: {fail_times}
              permanent: {permanent}
              value: "VIP {{{{ steps.name.output }}}} for {{{{ steps.team.value }}}}"
      - name: normal
        fallback: true
        steps:
          - id: normal_call
            action: flaky.call
            input:
              value: "{{{{ steps.name.output }}}}"
  - id: skipped
    action: builtin.lookup
    when: "steps.route.ran == ['nothing']"
    input: {{key: a, table: {{a: 1}}}}
"""

runner = CliRunner()


def write(tmp_path: Path, *, fail_times: int = 0, permanent: bool = False) -> tuple[Path, str]:
    zap_id = f"orders-{uuid.uuid4().hex[:6]}"
    text = ZAP.format(zap_id=zap_id, fail_times=fail_times, permanent=str(permanent).lower())
    path = tmp_path / f"{zap_id}.yaml"
    path.write_text(text)
    return path, zap_id


def event_file(tmp_path: Path, **payload: Any) -> Path:
    path = tmp_path / f"event-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(payload))
    return path


def run_id_of(output: str) -> uuid.UUID:
    match = re.search(r"flow run ([0-9a-f-]{36})", output)
    assert match, output
    return uuid.UUID(match.group(1))


def history(flow_run_id: uuid.UUID, expect_tasks: int) -> tuple[Any, dict[str, Any], dict]:
    """The flow run and its task runs (by name) with their states, once all have arrived."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read() -> tuple[Any, dict[str, Any], dict]:
        async with get_client() as client:
            deadline = time.monotonic() + 30
            while True:
                flow_run = await client.read_flow_run(flow_run_id)
                tasks = await client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
                )
                final = [t for t in tasks if t.state and t.state.is_final()]
                if len(final) >= expect_tasks or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            states = {t.name: await client.read_task_run_states(t.id) for t in tasks}
            return flow_run, {t.name: t for t in tasks}, states

    return asyncio.run(read())


def test_zap_runs_with_a_task_run_per_step_and_visible_retries(tmp_path):
    path, zap_id = write(tmp_path, fail_times=2)
    event = event_file(tmp_path, customer="chan tai man", region="HK", total=250)

    result = runner.invoke(app, ["run", str(path), "--event", str(event)])

    assert result.exit_code == 0, result.output
    assert "Completed" in result.output
    flow_run, tasks, states = history(run_id_of(result.output), expect_tasks=5)
    assert flow_run.state.name == "Completed"
    assert flow_run.name.startswith(f"{zap_id} ← builtin.catch_hook ")
    assert {"zapflow", f"zap:{zap_id}", "app:builtin"} <= set(flow_run.tags)
    assert set(tasks) == {"name", "wait", "team", "vip_call", "skipped"}
    assert tasks["vip_call"].run_count == 3
    vip_states = [s.name for s in states["vip_call"]]
    assert vip_states.count("AwaitingRetry") == 2 and vip_states[-1] == "Completed"
    assert tasks["skipped"].state.name == "Skipped"
    assert tasks["wait"].total_run_time.total_seconds() >= 0.2


def test_flow_is_named_after_the_zap(tmp_path):
    from prefect.client.orchestration import get_client

    path, zap_id = write(tmp_path)
    result = runner.invoke(
        app,
        [
            "run",
            str(path),
            "--event",
            str(event_file(tmp_path, customer="a", region="SG", total=20)),
        ],
    )
    assert result.exit_code == 0, result.output
    flow_run, tasks, _ = history(run_id_of(result.output), expect_tasks=5)
    assert "normal_call" in tasks and "vip_call" not in tasks

    async def flow_name() -> str:
        async with get_client() as client:
            return (await client.read_flow(flow_run.flow_id)).name

    assert asyncio.run(flow_name()) == zap_id


def test_a_filtered_event_ends_filtered_not_failed(tmp_path):
    path, _ = write(tmp_path)
    event = event_file(tmp_path, customer="small", region="HK", total=3)

    result = runner.invoke(app, ["run", str(path), "--event", str(event)])

    assert result.exit_code == 0, result.output
    assert (
        "Filtered" in result.output and "filter[0] `trigger.total >= 10` was false" in result.output
    )
    flow_run, tasks, _ = history(run_id_of(result.output), expect_tasks=0)
    assert flow_run.state.type.value == "COMPLETED" and flow_run.state.name == "Filtered"
    assert tasks == {}


def test_permanent_error_fails_at_once_then_replay_after_the_fix(tmp_path):
    path, zap_id = write(tmp_path, permanent=True)
    event = event_file(tmp_path, customer="lee", region="HK", total=500)

    result = runner.invoke(app, ["run", str(path), "--event", str(event)])

    assert result.exit_code == 1
    assert "Failed" in result.output and "invalid recipient" in result.output
    failed_id = run_id_of(result.output)
    _, tasks, _ = history(failed_id, expect_tasks=4)
    assert tasks["vip_call"].run_count == 1, "a permanent error must not be retried"

    event_id = re.search(r"event ([0-9a-f]{32})", result.output).group(1)

    listing = runner.invoke(app, ["runs", "--zap", zap_id])
    assert listing.exit_code == 0, listing.output
    row = next(line for line in listing.output.splitlines() if event_id[:12] in line)
    assert "Failed" in row and "vip_call" in row

    path.write_text(path.read_text().replace("permanent: true", "permanent: false"))
    replayed = runner.invoke(app, ["replay", event_id[:10], "--zaps", str(tmp_path)])

    # From the failed step: the same event and ledger row; the steps before it are read from
    # their checkpoints, not run again (the 0.2 s delay is not waited again).
    assert replayed.exit_code == 0, replayed.output
    assert (
        f"replayed {zap_id} on event {event_id} (was failed) from step 'vip_call' "
        "(name, wait, team done before, not run again)" in replayed.output
    )
    assert "Completed" in replayed.output
    new_run, new_tasks, _ = history(run_id_of(replayed.output), 2)
    assert new_run.id != failed_id and set(new_tasks) == {"vip_call", "skipped"}
    assert new_run.parameters["event"]["id"] == event_id  # the same event: same idempotency keys
    # Each flow run's version is its zap's: the fix made a new one.
    old_version = history(failed_id, 4)[0].flow_version
    assert re.fullmatch(r"[0-9a-f]{12}", old_version) and new_run.flow_version != old_version
    listing = runner.invoke(app, ["runs", "--zap", zap_id])
    rows = [line for line in listing.output.splitlines() if event_id[:12] in line]
    assert len(rows) == 1 and "Completed" in rows[0], listing.output  # the run itself, now done

    again = runner.invoke(app, ["replay", event_id[:10], "--zaps", str(tmp_path)])
    assert again.exit_code == 1 and "no step failed to replay from" in again.output

    fresh = runner.invoke(app, ["replay", event_id[:10], "--from-start", "--zaps", str(tmp_path)])
    assert fresh.exit_code == 0, fresh.output
    assert "from the start as event" in fresh.output
    new_run, new_tasks, _ = history(run_id_of(fresh.output), 5)
    old_event = history(failed_id, 4)[0].parameters["event"]
    assert new_run.parameters["event"]["payload"] == old_event["payload"]
    assert new_run.parameters["event"]["id"] != event_id  # a new run, not a retry of the first

    listing = runner.invoke(app, ["runs", "--zap", zap_id, "-n", "2"], env={"COLUMNS": "160"})
    rows = [line for line in listing.output.splitlines() if "│" in line][1:]
    assert "Completed" in rows[0], listing.output  # newest first: the replay

    unknown = runner.invoke(app, ["replay", "ffffffffff", "--zaps", str(tmp_path)])
    assert unknown.exit_code == 1 and "no zap run whose event id starts with" in unknown.output


def test_replay_every_failed_run_of_a_zap_with_the_recorded_or_current_version(tmp_path):
    path, zap_id = write(tmp_path, permanent=True)
    ids = []
    for customer in ("ann", "bob"):
        event = event_file(tmp_path, customer=customer, region="HK", total=500)
        result = runner.invoke(app, ["run", str(path), "--event", str(event)])
        assert result.exit_code == 1, result.output
        ids.append(re.search(r"event ([0-9a-f]{32})", result.output).group(1))
    path.write_text(path.read_text().replace("permanent: true", "permanent: false"))

    # The version they ran still fails: replayed with it, both fail again, as recorded.
    recorded = runner.invoke(
        app,
        ["replay", "--failed", "--zap", zap_id, "--zap-version", "recorded", "--since", "1h"]
        + ["--zaps", str(tmp_path)],
    )
    assert recorded.exit_code == 1, recorded.output
    assert f"2 failed run(s) of {zap_id} replayed; 0 completed" in recorded.output
    fixed = runner.invoke(app, ["replay", "--failed", "--zap", zap_id, "--zaps", str(tmp_path)])
    assert fixed.exit_code == 0, fixed.output
    assert f"2 failed run(s) of {zap_id} replayed; 2 completed" in fixed.output
    for event_id in ids:  # oldest first, each from its failed step, on its own event
        assert f"on event {event_id} (was failed) from step 'vip_call'" in fixed.output
    nothing = runner.invoke(app, ["replay", "--failed", "--zap", zap_id, "--zaps", str(tmp_path)])
    assert nothing.exit_code == 0 and f"0 failed run(s) of {zap_id} replayed" in nothing.output

    usage = runner.invoke(app, ["replay", "--failed", "--zaps", str(tmp_path)])
    assert usage.exit_code == 1 and "--failed needs --zap ID" in usage.output
    bad = runner.invoke(app, ["replay", "--failed", "--zap", zap_id, "--since", "soon"])
    assert bad.exit_code == 1 and "--since 'soon' is not a duration" in bad.output


def test_a_step_that_runs_past_its_timeout_fails(tmp_path, write_zap):
    path = write_zap(
        """\
zap: slow-zap
trigger: {app: builtin, event: catch_hook}
steps:
  - id: slow
    action: builtin.delay
    timeout: 0.3s
    retries: 0
    input: {for: 5s}
"""
    )
    started = time.monotonic()
    result = runner.invoke(app, ["run", str(path), "--sample", "1"])
    assert result.exit_code == 1, result.output
    assert time.monotonic() - started < 4
    assert "Failed" in result.output


def test_demo_runs_every_example_zap_on_its_samples(zapflow_home):
    from conftest import EXAMPLE_ZAPS
    from openpyxl import load_workbook

    result = runner.invoke(app, ["demo", "--zaps", str(EXAMPLE_ZAPS)])

    assert result.exit_code == 0, result.output
    for path in EXAMPLE_ZAPS.glob("*.yaml"):
        assert path.stem in result.output.split("zap runs")[1], path.stem  # it ran
    assert "catch hook of order-follow-up" in result.output  # delivered through serve
    assert "emits missed_enquiry (for missed-enquiry-follow-up)" in result.output
    assert "Failed" not in result.output
    received = result.output.split("what the CINNOX sandbox received", 1)[1]
    assert "Customer Care HK" in received and "Escalations" in received and "+852" in received
    assert "+85298765432" in received  # the approved request's SMS, from a poll of its sheet
    slack = result.output.split("what the Slack sandbox received", 1)[1]
    assert slack.count("#customer-care") == 2  # one per missed enquiry
    sheets = zapflow_home / "demo-sheets"
    assert f"rows in {sheets / 'follow-ups.xlsx'}" in result.output

    def table(name: str) -> list[tuple]:
        return list(load_workbook(sheets / name).worksheets[0].iter_rows(values_only=True))

    follow_ups, contacts, requests = (
        table(f"{n}.xlsx") for n in ("follow-ups", "contacts", "requests")
    )
    assert [r[-1] for r in follow_ups] == ["Status", "Open", "Open"]
    assert len(contacts) == 2 and contacts[0][0] == "Contact ID"
    assert [r[4] for r in requests] == ["Status", "Approved", "Rejected"]


def _run_zap(write_zap, text: str, **payload: Any) -> tuple[Any, dict[str, Any], dict, float]:
    path = write_zap(text)
    event = path.with_suffix(".event.json")
    event.write_text(json.dumps(payload))
    started = time.monotonic()
    result = runner.invoke(app, ["run", str(path), "--event", str(event)])
    took = time.monotonic() - started
    flow_run, tasks, states = history(run_id_of(result.output), expect_tasks=1)
    return result, tasks, states, took


def test_retry_delays_grow_by_the_backoff_factor(write_zap):
    """retry_delay 0.3 s, backoff 3: waits 0.3 s then 0.9 s (without jitter)."""
    from datetime import timedelta

    from flows.model import StepPolicy
    from flows.task_runs import retry_delays

    policy = StepPolicy(retries=3, retry_delay=timedelta(seconds=2), retry_backoff=3)
    assert retry_delays(policy) == [2.0, 6.0, 18.0]
    assert retry_delays(StepPolicy(retries=2, retry_delay=timedelta(seconds=1))) == [1.0, 1.0]

    result, tasks, states, took = _run_zap(
        write_zap,
        """\
zap: backoff
trigger: {app: builtin, event: catch_hook}
steps:
  - id: call
    action: flaky.call
    retries: 2
    retry_delay: 0.3s
    retry_backoff: 3
    retry_jitter: 0
    input: {fail_times: 2, value: "{{ trigger.n }}"}
""",
        n=1,
    )
    assert result.exit_code == 0, result.output
    waits = [s for s in states["call"] if s.name == "AwaitingRetry"]
    assert len(waits) == 2
    gaps = sorted((s.state_details.scheduled_time - s.timestamp).total_seconds() for s in waits)
    assert gaps[0] == pytest.approx(0.3, abs=0.1) and gaps[1] == pytest.approx(0.9, abs=0.1)
    assert took >= 1.2


def test_a_timed_out_step_is_retried_under_its_policy(write_zap):
    result, tasks, states, _ = _run_zap(
        write_zap,
        """\
zap: slow-then-fail
trigger: {app: builtin, event: catch_hook}
steps:
  - id: slow
    action: builtin.delay
    timeout: 0.2s
    retries: 2
    retry_delay: 0s
    input: {for: 5s}
""",
        n=1,
    )
    assert result.exit_code == 1
    assert tasks["slow"].run_count == 3  # the first try and two retries, each timed out
    assert [s.name for s in states["slow"]].count("Retrying") == 2


def test_an_unexpected_error_is_retried_like_a_transient_one(write_zap):
    result, tasks, states, _ = _run_zap(
        write_zap,
        """\
zap: buggy-once
trigger: {app: builtin, event: catch_hook}
steps:
  - id: call
    action: flaky.call
    retries: 1
    retry_delay: 0s
    input: {crash_times: 1, value: "{{ trigger.n }}"}
""",
        n=2,
    )
    assert result.exit_code == 0, result.output
    assert tasks["call"].run_count == 2 and tasks["call"].state.name == "Completed"


@pytest.mark.parametrize(
    ("payload", "ran"),
    [
        ({"total": 20, "region": "HK"}, True),
        ({"total": 20, "region": "SG"}, False),
        ({"total": 5, "region": "HK"}, False),
        ({"total": 5, "region": "SG"}, False),
    ],
)
def test_every_filter_condition_must_hold(write_zap, payload, ran):
    result = runner.invoke(
        app,
        [
            "run",
            str(
                write_zap(
                    """\
zap: both
trigger: {app: builtin, event: catch_hook}
filter:
  - "trigger.total >= 10"
  - "trigger.region == 'HK'"
steps:
  - id: call
    action: flaky.call
    input: {value: "{{ trigger.region }}"}
"""
                )
            ),
            "--event",
            str(_event(write_zap, payload)),
        ],
    )
    assert result.exit_code == 0, result.output
    assert ("Filtered" in result.output) is not ran, result.output


def _event(write_zap, payload: dict[str, Any]) -> Path:
    return write_zap(json.dumps(payload), name=f"event-{uuid.uuid4().hex[:6]}.json")
