"""The dispatcher's promises: each (event, zap) runs once, even across a crash; events wait in
the inbox while Prefect is down and drain when it is back; only matching zaps run."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from flows.events import Event
from flows.intake.dispatcher import Dispatcher, matching
from flows.intake.inbox import Inbox
from flows.loader import load_zap_text

pytestmark = pytest.mark.usefixtures("prefect_api")

GREET = load_zap_text(
    "zap: greet-dispatch\ntrigger: {app: builtin, event: catch_hook}\nsteps:\n"
    "  - {id: n, action: builtin.format_text, input: {transform: uppercase,"
    " value: '{{ trigger.name }}'}}\n"
)
MISSED = load_zap_text(
    "zap: missed-main\ntrigger: {app: cinnox, event: missed_enquiry, connection: main}\n"
    "steps:\n  - {id: n, action: builtin.lookup, input: {key: a, table: {a: 1}}}\n"
)


def hook_event(name: str = "chan") -> Event:
    return Event(
        id=uuid.uuid4().hex,
        app="builtin",
        trigger="catch_hook",
        payload={"name": name},
        zap="greet-dispatch",
    )


async def drain(dispatcher: Dispatcher, inbox: Inbox, timeout: float = 60) -> None:
    task = asyncio.create_task(dispatcher.run())
    deadline = time.monotonic() + timeout
    while True:
        counts = await inbox.counts()
        if counts.get("done", 0) and not (counts.get("pending", 0) or counts.get("claimed", 0)):
            break
        assert time.monotonic() < deadline, counts
        await asyncio.sleep(0.05)
    dispatcher.stop()
    await task


def test_matching_by_trigger_connection_and_hook():
    other = MISSED.model_copy(update={"zap": "missed-other"})
    other.trigger = other.trigger.model_copy(update={"connection": "other"})
    event = Event(id="e", app="cinnox", trigger="missed_enquiry", payload={}, connection="main")
    assert [z.zap for z in matching([GREET, MISSED, other], event)] == ["missed-main"]
    assert [z.zap for z in matching([GREET, MISSED], hook_event())] == ["greet-dispatch"]
    off = GREET.model_copy(update={"enabled": False})
    assert matching([off], hook_event()) == []


async def test_each_event_runs_once_and_never_again_after_a_crash(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'inbox.db'}"
    inbox = await Inbox.open(url)
    first, crashed = hook_event("ann"), hook_event("bob")
    await inbox.put_many([first, crashed])
    # A dispatcher that died after running `crashed` but before marking the event done:
    assert await inbox.start_run(crashed.id, "greet-dispatch")
    await inbox.finish_run(crashed.id, "greet-dispatch", "completed")

    dispatcher = Dispatcher(inbox, lambda: [GREET], concurrency=2)
    await drain(dispatcher, inbox)

    assert dispatcher.stats.runs == 1 and dispatcher.stats.skipped == 1
    assert await inbox.run_state(first.id, "greet-dispatch") == "completed"
    assert await inbox.put(first) is False  # a redelivery of the same event: not a new run
    assert (await inbox.counts()).get("pending", 0) == 0
    await inbox.close()


async def test_a_run_still_marked_running_elsewhere_sends_the_event_back(tmp_path):
    inbox = await Inbox.open(f"sqlite+aiosqlite:///{tmp_path / 'inbox.db'}")
    event = hook_event()
    await inbox.put(event)
    assert await inbox.start_run(event.id, "greet-dispatch")  # another worker holds it
    dispatcher = Dispatcher(inbox, lambda: [GREET], lease=4.0)
    task = asyncio.create_task(dispatcher.run())
    await asyncio.sleep(0.5)
    dispatcher.stop()
    await task
    assert dispatcher.stats.runs == 0
    counts = await inbox.counts()
    assert counts.get("done", 0) == 0 and counts.get("pending", 0) == 1
    await inbox.close()


async def test_events_wait_while_prefect_is_down_and_drain_when_it_is_back(tmp_path):
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_CLIENT_MAX_RETRIES,
        temporary_settings,
    )

    inbox = await Inbox.open(f"sqlite+aiosqlite:///{tmp_path / 'inbox.db'}")
    events = [hook_event(f"n{i}") for i in range(3)]
    await inbox.put_many(events)

    with temporary_settings(
        {PREFECT_API_URL: "http://127.0.0.1:9/api", PREFECT_CLIENT_MAX_RETRIES: 0}
    ):
        down = Dispatcher(inbox, lambda: [GREET])
        task = asyncio.create_task(down.run())
        deadline = time.monotonic() + 20
        while down.stats.infrastructure_errors < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        down.stop()
        await task
    assert down.stats.infrastructure_errors >= 2 and down.stats.runs == 0
    counts = await inbox.counts()
    assert counts.get("done", 0) == 0 and counts.get("pending", 0) == 3  # nothing lost
    for event in events:  # abandoned, not marked as run: they may run once Prefect is back
        assert await inbox.run_state(event.id, "greet-dispatch") in (None, "abandoned")
    waiting = [r for r in await inbox.recent_runs() if r.state == "abandoned"]
    assert waiting and all(
        r.message.startswith("Prefect unreachable (") and r.message.endswith("runs when it answers")
        for r in waiting
    )
    from flows.history import _row

    assert {_row(r).state for r in waiting} == {"Queued"}  # what `zapflow runs` shows

    await asyncio.sleep(max(0.0, down._backoff))  # the events' release delay
    back = Dispatcher(inbox, lambda: [GREET])
    await drain(back, inbox)
    assert back.stats.runs == 3 and (await inbox.counts()).get("done") == 3
    await inbox.close()


async def test_a_poison_event_fails_after_bounded_tries_and_holds_nobody_back(tmp_path):
    """An event that cannot be turned into a run through its own fault (here: something in it
    cannot be serialised) is tried a few times on its own schedule, then its run is recorded
    failed with the reason; ordinary events meanwhile run at once and nobody backs off."""
    inbox = await Inbox.open(f"sqlite+aiosqlite:///{tmp_path / 'inbox.db'}")
    dispatcher = Dispatcher(inbox, lambda: [GREET])
    real_run = dispatcher.live.run
    tries = 0

    async def run(zap, event, journal=None):
        nonlocal tries
        if event.payload["name"] == "poison":
            tries += 1
            raise ValueError("Maximum serialization depth exceeded")
        return await real_run(zap, event, journal)

    dispatcher.live.run = run  # type: ignore[method-assign]
    poison = hook_event("poison")
    await inbox.put(poison)
    task = asyncio.create_task(dispatcher.run())
    await asyncio.sleep(0.5)  # the poison has had its first try
    plain = [hook_event(f"p{i}") for i in range(3)]
    sent = time.monotonic()
    await inbox.put_many(plain)
    dispatcher.nudged()
    for event in plain:
        while await inbox.run_state(event.id, "greet-dispatch") != "completed":
            assert time.monotonic() - sent < 5, "plain events held back by the poison"
            await asyncio.sleep(0.05)
    assert time.monotonic() - sent < 3
    deadline = time.monotonic() + 30
    while await inbox.run_state(poison.id, "greet-dispatch") != "failed":
        assert time.monotonic() < deadline, tries
        await asyncio.sleep(0.1)
    dispatcher.stop()
    await task

    assert tries == 3  # bounded, then no more
    assert dispatcher.stats.infrastructure_errors == 0 and dispatcher._backoff == 0
    [row] = await inbox.recent_runs(event_prefix=poison.id)
    assert row.state == "failed" and row.flow_run_id is None
    assert row.message == (
        "could not be run (3 tries): ValueError: Maximum serialization depth exceeded"
    )
    counts = await inbox.counts()
    assert counts.get("pending", 0) == 0 and counts.get("done") == 4
    await inbox.close()


def test_a_dead_dispatcher_is_known_by_its_process_identity_not_its_pid_alone():
    """A zombie, or a live process that got the dead one's PID (it started at another time),
    is a dead dispatcher; the live one itself is not."""
    import subprocess
    import sys

    from flows.intake.dispatcher import HOST, dead_local_workers, process_started

    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while process_started(zombie.pid) != "Z":  # exited, not yet reaped
            assert time.monotonic() < deadline
            time.sleep(0.05)
        started = process_started(alive.pid)
        assert started and started.isdigit()
        same = f"{HOST}:{alive.pid}:{started}"
        reused = f"{HOST}:{alive.pid}:{int(started) - 1}"  # its PID, another process's start
        dead_zombie = f"{HOST}:{zombie.pid}:{started}"
        elsewhere = f"other-host:{alive.pid}:1"
        assert sorted(dead_local_workers({same, reused, dead_zombie, elsewhere})) == sorted(
            [reused, dead_zombie]
        )
        assert dead_local_workers({f"{HOST}:{alive.pid}"}) == []  # the old naming: PID only
    finally:
        alive.kill()
        alive.wait()
        zombie.wait()
    assert dead_local_workers({same}) == [same]  # gone


async def test_runs_of_a_dispatcher_whose_heartbeat_stopped_are_taken_over(tmp_path):
    """On another host (its process cannot be looked at), a dispatcher is dead once its
    heartbeat stopped SILENT_AFTER ago: its run is taken over at once, not after stale_after.
    One whose heartbeat goes on keeps its run."""
    from datetime import UTC, datetime, timedelta

    import sqlalchemy as sa

    from flows.intake import dispatcher as dispatcher_module
    from flows.intake.db import workers

    inbox = await Inbox.open(f"sqlite+aiosqlite:///{tmp_path / 'inbox.db'}")
    quiet, busy = hook_event("quiet"), hook_event("busy")
    await inbox.put_many([quiet, busy])
    await inbox.start_runs([(quiet.id, "greet-dispatch")], worker="far-host:77:1")
    await inbox.start_runs([(busy.id, "greet-dispatch")], worker="near-host:78:1")
    await inbox.heartbeat("far-host:77:1", "far-host")
    await inbox.heartbeat("near-host:78:1", "near-host")
    long_ago = datetime.now(UTC) - timedelta(seconds=dispatcher_module.SILENT_AFTER + 5)
    async with inbox._write_engine.begin() as conn:
        await conn.execute(
            sa.update(workers).where(workers.c.worker == "far-host:77:1").values(seen_at=long_ago)
        )
    dispatcher = Dispatcher(inbox, lambda: [GREET], lease=4.0)
    task = asyncio.create_task(dispatcher.run())
    deadline = time.monotonic() + 20
    while await inbox.run_state(quiet.id, "greet-dispatch") != "completed":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    dispatcher.stop()
    await task
    assert await inbox.run_state(busy.id, "greet-dispatch") == "running"  # still its own
    assert dispatcher.stats.runs == 1
    async with inbox._engine.connect() as conn:  # a dispatcher that stops signs off
        names = {w for (w,) in await conn.execute(sa.select(workers.c.worker))}
    assert dispatcher.worker not in names and "near-host:78:1" in names
    await inbox.close()


async def test_with_a_backlog_in_hand_a_dispatcher_claims_whole_batches(tmp_path):
    """Under a burst a claim (one transaction on the shared inbox) takes a batch, not the one
    event a run finishing has just made room for."""
    inbox = await Inbox.open(f"sqlite+aiosqlite:///{tmp_path / 'inbox.db'}")
    await inbox.put_many([hook_event(f"n{i}") for i in range(120)])
    claims: list[int] = []
    claim = inbox.claim_and_start

    async def counted(*args, **kwargs):
        claimed, started = await claim(*args, **kwargs)
        if claimed:
            claims.append(len(claimed))
        return claimed, started

    inbox.claim_and_start = counted  # type: ignore[method-assign]
    # Runs finishing one at a time, slower than a claim every WRITE_GAP_BUSY takes ten.
    slow = load_zap_text(
        "zap: greet-dispatch\ntrigger: {app: builtin, event: catch_hook}\nsteps:\n"
        "  - {id: n, action: flaky.call, input: {seconds: 0.02}}\n"
    )
    dispatcher = Dispatcher(inbox, lambda: [slow], concurrency=1, in_flight=20, batch=10)
    await drain(dispatcher, inbox)
    assert dispatcher.stats.runs == 120
    assert sum(claims) == 120 and set(claims[:-1]) == {10}, claims
    await inbox.close()
