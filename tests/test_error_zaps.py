"""Error zaps: a zap run that fails for good (after its retries and autoreplays) makes a
`builtin.zap_failed` event, in the same transaction as its ledger row, which starts the zaps
with that trigger (filtered by their options); an error zap that fails makes none (no loops)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from flows.events import Event, derived_id
from flows.intake.dispatcher import Dispatcher
from flows.intake.inbox import Inbox
from flows.loader import load_zap_text

pytestmark = pytest.mark.usefixtures("prefect_api")


def zap(text: str) -> Any:
    return load_zap_text(text)


BREAKS = zap(
    "zap: breaks\ntrigger: {app: builtin, event: catch_hook}\nsteps:\n"
    "  - {id: first, action: builtin.format_text, input: {transform: uppercase, value: x}}\n"
    "  - {id: call, action: flaky.call, input: {permanent: true}}\n"
)
ALERT = zap(
    "zap: alert\ntrigger: {app: builtin, event: zap_failed, options: {zaps: [breaks]}}\n"
    "steps:\n  - {id: note, action: builtin.format_text, input: {transform: trim,"
    " value: '{{ trigger.zap }} {{ trigger.failing_step }} {{ trigger.kind }}'}}\n"
)
ELSEWHERE = zap(
    "zap: alert-elsewhere\n"
    "trigger: {app: builtin, event: zap_failed, options: {kinds: [transient]}}\n"
    "steps:\n  - {id: note, action: builtin.format_text, input: {transform: trim, value: x}}\n"
)
ALERT_BREAKS = zap(
    "zap: alert-breaks\ntrigger: {app: builtin, event: zap_failed}\n"
    "steps:\n  - {id: call, action: flaky.call, input: {permanent: true}}\n"
)


async def test_a_failed_run_starts_the_error_zaps_once_and_an_error_zap_never_loops(
    tmp_path: Any,
) -> None:
    inbox = await Inbox.open(f"sqlite+aiosqlite:///{tmp_path / 'inbox.db'}")
    broken = Event(
        id=uuid.uuid4().hex, app="builtin", trigger="catch_hook", payload={}, zap="breaks"
    )
    await inbox.put(broken)
    zaps = [BREAKS, ALERT, ELSEWHERE, ALERT_BREAKS]
    dispatcher = Dispatcher(inbox, lambda: zaps)
    task = asyncio.create_task(dispatcher.run())
    deadline = time.monotonic() + 30
    while True:
        runs = {(r.zap, r.event_id): r for r in await inbox.recent_runs(limit=100)}
        counts = await inbox.counts()
        if len(runs) >= 3 and counts["pending"] == counts["claimed"] == 0:
            break
        assert time.monotonic() < deadline, (runs, counts)
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # an error zap's failure would make another event by now
    dispatcher.stop()
    await task
    runs = {(r.zap, r.event_id): r for r in await inbox.recent_runs(limit=100)}
    failure_id = derived_id("zap-failed", "breaks", broken.id)
    failure = await inbox.get(failure_id)
    counts = await inbox.counts()
    await inbox.close()

    assert runs[("breaks", broken.id)].state == "failed"
    assert failure is not None
    assert failure.payload["zap"] == "breaks" and failure.payload["failing_step"] == "call"
    assert failure.payload["kind"] == "permanent"
    assert "invalid recipient" in failure.payload["error"]
    assert failure.payload["replay_command"] == f"zapflow replay {broken.id[:12]} --zap breaks"
    assert runs[("alert", failure_id)].state == "completed"  # its options take it
    assert ("alert-elsewhere", failure_id) not in runs  # its options do not (transient only)
    assert runs[("alert-breaks", failure_id)].state == "failed"
    # Two events in all: the delivery and the one failure; the error zap's failure made none.
    assert counts["done"] == 2 and sorted(runs) == sorted(
        [("breaks", broken.id), ("alert", failure_id), ("alert-breaks", failure_id)]
    )


FALLBACK = """\
zap: sms-with-fallback
trigger: {app: builtin, event: catch_hook}
steps:
  - {id: sms, action: flaky.call, input: {permanent: true}}
on_failure:
  - id: note
    action: builtin.format_text
    input:
      transform: trim
      value: "{{ trigger.payload.phone }} {{ trigger.zap }}.{{ trigger.failing_step }}"
  - {id: breaks_too, action: flaky.call, input: {permanent: true}}
"""


async def test_on_failure_steps_run_on_the_failure_with_the_failed_runs_payload(
    tmp_path: Any,
) -> None:
    from flows.intake.folder import ZapFolder

    folder = tmp_path / "zaps"
    folder.mkdir()
    (folder / "sms.yaml").write_text(FALLBACK, encoding="utf-8")
    zaps = ZapFolder(folder, report=lambda _line: None)
    assert zaps.refresh()
    assert [z.zap for z in zaps.zaps] == ["sms-with-fallback", "sms-with-fallback--on-failure"]
    assert zaps.zaps[1] is zaps.zaps[1]  # built once per loaded definition

    inbox = await Inbox.open(f"sqlite+aiosqlite:///{tmp_path / 'inbox.db'}")
    event = Event(
        id=uuid.uuid4().hex,
        app="builtin",
        trigger="catch_hook",
        payload={"phone": "+85291234567"},
        zap="sms-with-fallback",
    )
    await inbox.put(event)
    dispatcher = Dispatcher(inbox, lambda: zaps.zaps)
    task = asyncio.create_task(dispatcher.run())
    failure_id = derived_id("zap-failed", "sms-with-fallback", event.id)
    deadline = time.monotonic() + 30
    while True:
        runs = {(r.zap, r.event_id): r for r in await inbox.recent_runs(limit=100)}
        counts = await inbox.counts()
        if len(runs) >= 2 and counts["pending"] == counts["claimed"] == 0:
            break
        assert time.monotonic() < deadline, (runs, counts)
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # the on_failure run's own failure would make an event by now
    dispatcher.stop()
    await task
    runs = {(r.zap, r.event_id): r for r in await inbox.recent_runs(limit=100)}
    steps = await inbox.load_steps([(failure_id, "sms-with-fallback--on-failure")])
    counts = await inbox.counts()
    await inbox.close()

    assert runs[("sms-with-fallback", event.id)].state == "failed"
    handler = runs[("sms-with-fallback--on-failure", failure_id)]
    assert handler.state == "failed" and handler.failing_step == "breaks_too"
    status, output = steps[(failure_id, "sms-with-fallback--on-failure")]["note"]
    assert status == "completed"
    assert "+85291234567 sms-with-fallback.sms" in str(output)
    assert counts["done"] == 2 and len(runs) == 2  # its failure started nothing (no loops)


def test_on_failure_steps_are_checked_where_they_are_written() -> None:
    from flows.errors import ZapValidationError

    text = (
        FALLBACK.replace("trigger.zap", "trigger.nope").replace(
            "action: builtin.format_text", "action: builtin.format_txt"
        )
        + "  - id: late\n    action: builtin.format_text\n"
        + "    input: {transform: trim, value: '{{ steps.sms }}'}\n"
    )
    with pytest.raises(ZapValidationError) as caught:
        load_zap_text(text, "sms.yaml")
    found = {(p.line, p.path): p.message for p in caught.value.problems}
    assert any(
        path == "on_failure[0].action" and line == 7 and "format_text" in message
        for (line, path), message in found.items()
    ), found
    # The failure is the trigger there; the failed run's steps cannot be read.
    assert any(
        path == "on_failure[2].input.value" and "no step 'sms'" in message
        for (_, path), message in found.items()
    ), found

    long_id = "z" * 60
    with pytest.raises(ZapValidationError) as caught:
        load_zap_text(FALLBACK.replace("sms-with-fallback", long_id), "long.yaml")
    assert "at most 51 characters" in str(caught.value)


def test_on_failure_templates_read_the_failure_fields() -> None:
    from flows.errors import ZapValidationError

    with pytest.raises(ZapValidationError) as caught:
        load_zap_text(FALLBACK.replace("trigger.zap", "trigger.nope"), "sms.yaml")
    (problem,) = caught.value.problems
    assert problem.path == "on_failure[0].input.value" and problem.line == 10
    assert "builtin.zap_failed has no field 'nope'" in problem.message
