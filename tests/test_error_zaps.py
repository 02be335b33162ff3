"""Error zaps: a zap run that fails for good (after its retries and autoreplays) makes a
`builtin.zap_failed` event, in the same transaction as its ledger row, which starts the zaps
with that trigger (filtered by their options); an error zap that fails makes none (no loops)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from flows.intake.dispatcher import Dispatcher
from flows.intake.events import NewEvent
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
    broken = NewEvent(
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
    failure_id = f"zap-failed:breaks:{broken.id}"
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
