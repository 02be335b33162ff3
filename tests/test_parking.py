"""Delays that park: a run waiting in a delay is stored, not held. Its concurrency slot is free
at once, it resumes after the delay step when due (within a second), on this dispatcher or any
other sharing the inbox, and `zapflow runs --waiting`, `zapflow resume` and `zapflow cancel`
act on it. The Prefect UI shows the delay step's task run Waiting (a Scheduled state with its
time) while the run is parked, then Completed."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from inbox_fixtures import PG_SKIP, PG_URL
from typer.testing import CliRunner

from flows.cli import app
from flows.events import Event
from flows.intake.dispatcher import Dispatcher
from flows.intake.inbox import Inbox
from flows.loader import load_zap_text

pytestmark = pytest.mark.usefixtures("prefect_api")


def zap(zap_id: str, wait: str) -> Any:
    return load_zap_text(
        f"zap: {zap_id}\ntrigger: {{app: builtin, event: catch_hook}}\nsteps:\n"
        "  - {id: first, action: builtin.format_text, input: {transform: uppercase,"
        " value: '{{ trigger.name }}'}}\n"
        f"  - {{id: wait, action: builtin.delay, input: {{for: {wait}}}}}\n"
        "  - {id: then, action: builtin.format_text, input: {transform: lowercase,"
        " value: '{{ steps.first.output }} waited {{ steps.wait.waited_seconds }}'}}\n"
    )


def hook_event(zap_id: str, name: str) -> Event:
    return Event(
        id=uuid.uuid4().hex, app="builtin", trigger="catch_hook", payload={"name": name}, zap=zap_id
    )


async def until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what}: {found!r}"
        await asyncio.sleep(0.05)


async def ledger(inbox: Inbox, zap_id: str) -> dict[str, Any]:
    return {r.event_id: r for r in await inbox.recent_runs(limit=5000, zap=zap_id)}


async def test_a_delay_frees_its_slot_and_resumes_when_due(tmp_path: Any) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    from flows.history import recent_runs

    model = zap("parks", "2s")
    url = f"sqlite+aiosqlite:///{tmp_path / 'inbox.db'}"
    inbox = await Inbox.open(url)
    events = [hook_event("parks", f"Ann{i}") for i in range(5)]
    await inbox.put_many(events)
    # One slot: were the delay a sleep, the five runs would take 10 s one after the other.
    dispatcher = Dispatcher(inbox, lambda: [model], concurrency=1)
    task = asyncio.create_task(dispatcher.run())
    started = time.monotonic()

    async def all_waiting() -> bool:
        runs = await ledger(inbox, "parks")
        return len(runs) == 5 and all(r.state == "waiting" for r in runs.values())

    await until(all_waiting, 10, "the runs park")
    assert time.monotonic() - started < 1.9, "a waiting run held the zap's only slot"
    assert (await inbox.counts())["parked"] == 5
    listed = await recent_runs(inbox_url=url, waiting=True)
    assert len(listed) == 5 and all(r.state.startswith("Waiting until ") for r in listed)
    shown = await asyncio.to_thread(  # on a narrow terminal: the time under "Waiting until"
        CliRunner().invoke, app, ["runs", "--inbox", url, "--waiting"], env={"COLUMNS": "80"}
    )
    assert shown.exit_code == 0, shown.output
    waiting = [line for line in shown.output.splitlines() if "Waiting until" in line]
    assert len(waiting) == 5 and all(" parks " in line for line in waiting), shown.output
    parked = await ledger(inbox, "parks")
    steps = await inbox.load_steps([(e.id, "parks") for e in events])
    for event in events:  # the first step is done and kept; the delay waits, stored
        assert steps[(event.id, "parks")]["first"][0] == "completed"
        status, saved = steps[(event.id, "parks")]["wait"]
        assert status == "waiting" and saved["task_run"]
        assert datetime.fromisoformat(saved["resume_at"]) == parked[event.id].resume_at

    async def all_completed() -> bool:
        runs = await ledger(inbox, "parks")
        return all(r.state == "completed" for r in runs.values())

    await until(all_completed, 15, "the runs resume")
    done = await ledger(inbox, "parks")
    for event in events:
        run = done[event.id]
        assert run.resume_at is not None and run.finished_at is not None
        late = (run.finished_at - run.resume_at).total_seconds()
        assert 0 <= late < 1.0, f"resumed {late:.2f} s after it was due"
    assert (await inbox.counts())["done"] == 5
    dispatcher.stop()
    await task
    # Each run records the zap version it ran, and the version's definition is kept once.
    from flows.model import zap_version

    assert {r.zap_version for r in done.values()} == {zap_version(model)}
    kept = await inbox.zap_version(zap_version(model))
    assert kept is not None and kept[0]["steps"][1]["input"] == {"for": "2s"}

    # The delay step's task run: Waiting (Scheduled, with its time) while parked, Completed
    # after; the step after it read the delay's output.
    async with get_client() as client:

        async def recorded() -> list[Any]:
            name = f"wait ← builtin.catch_hook {events[0].id[:12]}"
            found = await client.read_task_runs(
                task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=[name]))
            )
            return found if found and found[0].state_name == "Completed" else []

        [waited] = await until(recorded, 20, "the delay's task run completes")
        history = await client.read_task_run_states(waited.id)
        waiting = [s for s in history if s.name == "Waiting"]
        assert waiting and waiting[0].type.value == "SCHEDULED"
        scheduled = waiting[0].state_details.scheduled_time
        assert scheduled is not None
        assert abs((scheduled - parked[events[0].id].resume_at).total_seconds()) < 0.01
    await inbox.close()


async def test_resume_and_cancel_act_on_one_waiting_run(tmp_path: Any) -> None:
    from flows.history import cancel_waiting, resume_waiting

    model = zap("day-wait", "1d")
    url = f"sqlite+aiosqlite:///{tmp_path / 'inbox.db'}"
    inbox = await Inbox.open(url)
    go_on, stop = hook_event("day-wait", "go"), hook_event("day-wait", "stop")
    await inbox.put_many([go_on, stop])
    dispatcher = Dispatcher(inbox, lambda: [model])
    task = asyncio.create_task(dispatcher.run())

    async def parked() -> bool:
        runs = await ledger(inbox, "day-wait")
        return len(runs) == 2 and all(r.state == "waiting" for r in runs.values())

    await until(parked, 10, "the runs park")
    run = (await ledger(inbox, "day-wait"))[go_on.id]
    assert run.resume_at is not None
    assert run.resume_at - datetime.now(UTC) > timedelta(hours=23)

    resumed, was = await resume_waiting(go_on.id[:10], inbox_url=url)
    assert (resumed.event_id, was) == (go_on.id, run.resume_at)
    cancelled = await cancel_waiting(stop.id, zap="day-wait", inbox_url=url)
    assert cancelled.event_id == stop.id

    async def settled() -> dict[str, Any] | None:
        runs = await ledger(inbox, "day-wait")
        states = {e: r.state for e, r in runs.items()}
        counts = await inbox.counts()
        finished = states == {go_on.id: "completed", stop.id: "cancelled"}
        return runs if finished and counts["done"] == 2 else None

    runs = await until(settled, 10, "the resumed run completes, the cancelled one ends")
    assert runs[stop.id].message == "cancelled by zapflow cancel"
    steps = await inbox.load_steps([(go_on.id, "day-wait"), (stop.id, "day-wait")])
    assert steps[(go_on.id, "day-wait")]["wait"][0] == "completed"
    assert steps[(stop.id, "day-wait")]["wait"][0] == "waiting"  # never went on
    with pytest.raises(Exception, match="no waiting run"):
        await resume_waiting(stop.id, inbox_url=url)
    dispatcher.stop()
    await task
    await inbox.close()


async def test_a_parked_run_resumes_on_another_serve_sharing_a_postgresql_inbox() -> None:
    if not PG_URL:
        pytest.skip(PG_SKIP)
    schema = f"zapflow_test_{uuid.uuid4().hex[:12]}"
    model = zap("hand-over", "2s")
    first_inbox = await Inbox.open(PG_URL, schema=schema)
    second_inbox = await Inbox.open(PG_URL, schema=schema)
    try:
        events = [hook_event("hand-over", f"n{i}") for i in range(3)]
        await first_inbox.put_many(events)
        first = Dispatcher(first_inbox, lambda: [model], worker="host-a:1:1")
        task = asyncio.create_task(first.run())

        async def parked() -> bool:
            runs = await ledger(first_inbox, "hand-over")
            return len(runs) == 3 and all(r.state == "waiting" for r in runs.values())

        await until(parked, 10, "the runs park")
        first.stop()  # this serve stops; its parked runs are rows, not tasks it holds
        await task
        second = Dispatcher(second_inbox, lambda: [model], worker="host-b:2:2")
        task = asyncio.create_task(second.run())

        async def completed() -> dict[str, Any] | None:
            runs = await ledger(second_inbox, "hand-over")
            return runs if all(r.state == "completed" for r in runs.values()) else None

        runs = await until(completed, 15, "the other serve resumes them")
        second.stop()
        await task
        for run in runs.values():
            assert run.resume_at is not None and run.finished_at is not None
            assert (run.finished_at - run.resume_at).total_seconds() < 1.0
        assert first.stats.by_state == {"waiting": 3}
        assert second.stats.by_state == {"completed": 3}
    finally:
        await first_inbox.close()
        await second_inbox.close()
        import sqlalchemy as sa
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(sa.make_url(PG_URL).set(drivername="postgresql+asyncpg"))
        async with engine.begin() as conn:
            await conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await engine.dispose()


async def prefect_caught_up(parked: int) -> None:
    """Wait until Prefect's server has recorded the parked runs' task runs (one Waiting each),
    so the tests after this one find it idle, not still recording this one's history."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:

        async def recorded() -> bool:
            reply = await client.request(
                "POST",
                "/task_runs/count",
                json={
                    "task_runs": {
                        "name": {"like_": "wait ← "},
                        "state": {"name": {"any_": ["Waiting"]}},
                    }
                },
            )
            return int(reply.json()) >= parked

        await until(recorded, 180, "Prefect records the parked runs")


def rss_mb() -> float:
    import os

    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@contextlib.contextmanager
def no_log_capture() -> Any:
    """pytest keeps every log record of a test (one per parked run here): not serve's memory.
    (Entered in the test's body: pytest adds its handlers for the call after the fixtures.)"""
    import logging

    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    kept = [
        (logger, handler)
        for logger in loggers
        for handler in logger.handlers
        if type(handler).__module__.startswith("_pytest")
    ]
    for logger, handler in kept:
        logger.removeHandler(handler)
    try:
        yield
    finally:
        for logger, handler in kept:
            logger.addHandler(handler)


async def test_a_thousand_parked_runs_cost_rows_not_memory(tmp_path: Any, figures: Any) -> None:
    import gc

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    model = zap("long-wait", "1h")
    inbox = await Inbox.open(f"sqlite+aiosqlite:///{tmp_path / 'inbox.db'}")
    dispatcher = Dispatcher(inbox, lambda: [model], live_idle=0.3)
    task = asyncio.create_task(dispatcher.run())

    async def park(count: int) -> float:
        await inbox.put_many([hook_event("long-wait", f"n{i}") for i in range(count)])
        began = time.monotonic()

        async def parked() -> bool:
            return (await inbox.counts())["parked"] >= total

        await until(parked, 120, "the runs park")
        took = time.monotonic() - began
        # The live flow run closes (idle) as it does between bursts, and the run history's
        # events and logs on their way to Prefect are sent: they are not parked runs.
        await asyncio.to_thread(EventsWorker.drain_all, 60)
        await asyncio.to_thread(APILogWorker.drain_all, 60)
        low, calm = len(gc.get_objects()), 0
        for _ in range(40):
            await asyncio.sleep(0.5)
            gc.collect()
            now = len(gc.get_objects())
            low, calm = (now, 0) if now < low - 100 else (low, calm + 1)
            if calm >= 4:
                break
        return took

    with no_log_capture():
        # Warm-up: whatever a burst of runs needs once is loaded and the bounded buffers
        # are full (the events client keeps its last events to resend after a reconnect).
        total = 300
        await park(300)
        objects_before, rss_before = len(gc.get_objects()), rss_mb()
        tasks_before = len(asyncio.all_tasks())
        total = 1300
        took = await park(1000)
        objects_after, rss_after = len(gc.get_objects()), rss_mb()
        tasks_after = len(asyncio.all_tasks())

    dispatcher.stop()
    await task
    # A claim skips parked events by their own index: parked runs do not slow it.
    claim_ms = []
    for _ in range(20):
        began = time.perf_counter()
        assert await inbox.claim("probe", limit=100) == []
        claim_ms.append((time.perf_counter() - began) * 1000)
    waiting = await inbox.recent_runs(limit=5000, zap="long-wait", waiting=True)
    await inbox.close()
    await prefect_caught_up(len(waiting))

    section = "Parking: 1,000 more runs in a 1 h delay, 300 parked before (in-process, SQLite)"
    figures.record(section, "runs parked", len(waiting))
    figures.record(section, "seconds to park 1,000", round(took, 1))
    figures.record(section, "Python objects after − before", objects_after - objects_before)
    figures.record(section, "RSS before → after (MB)", f"{rss_before:.0f} → {rss_after:.0f}")
    figures.record(
        section, "an empty claim with 1,300 parked (ms, median)", f"{sorted(claim_ms)[10]:.2f}"
    )
    assert len(waiting) == 1300
    figures.record(section, "asyncio tasks before → after", f"{tasks_before} → {tasks_after}")
    # Rows, not memory: no task or coroutine waits for a parked run, and what is left in the
    # process is bounded buffers (the last write batch, Prefect's event client), not per run.
    assert tasks_after - tasks_before <= 5, (tasks_before, tasks_after)
    assert objects_after - objects_before < 10 * 1000, (objects_before, objects_after)
    assert rss_after - rss_before < 30, (rss_before, rss_after)
    assert sorted(claim_ms)[10] < 20


async def test_a_delay_queue_lets_runs_go_on_one_at_a_time_spaced(
    tmp_path: Any, monkeypatch: Any
) -> None:
    """Zapier's Delay After Queue: runs sharing a queue name go on `for` apart, the first at
    once; the queue's slots are taken atomically in zapflow's database."""
    from flows.intake.storage import close_stores

    url = f"sqlite+aiosqlite:///{tmp_path / 'inbox.db'}"
    monkeypatch.setenv("ZAPFLOW_INBOX_URL", url)
    model = load_zap_text(
        "zap: queued\ntrigger: {app: builtin, event: catch_hook}\nsteps:\n"
        "  - {id: space, action: builtin.delay, input: {queue: sms-out, for: 1s}}\n"
        "  - {id: then, action: builtin.format_text, input: {transform: uppercase,"
        " value: '{{ trigger.name }}'}}\n"
    )
    inbox = await Inbox.open(url)
    events = [hook_event("queued", f"n{i}") for i in range(4)]
    await inbox.put_many(events)
    dispatcher = Dispatcher(inbox, lambda: [model])
    task = asyncio.create_task(dispatcher.run())

    async def completed() -> dict[str, Any] | None:
        runs = await ledger(inbox, "queued")
        done = len(runs) == 4 and all(r.state == "completed" for r in runs.values())
        return runs if done else None

    runs = await until(completed, 20, "the queue drains")
    dispatcher.stop()
    await task
    steps = await inbox.load_steps([(e.id, "queued") for e in events])
    await inbox.close()
    await close_stores()
    went_on = sorted(
        datetime.fromisoformat(steps[(e.id, "queued")]["space"][1]["resumed_at"]) for e in events
    )
    gaps = [(b - a).total_seconds() for a, b in zip(went_on, went_on[1:], strict=False)]
    assert all(abs(gap - 1.0) < 0.01 for gap in gaps), gaps  # exactly `for` apart
    parked = [r for r in runs.values() if r.resume_at is not None]
    assert len(parked) == 3  # the first found the queue idle and went on at once
    for run in parked:
        assert run.finished_at is not None and run.resume_at is not None
        assert (run.finished_at - run.resume_at).total_seconds() < 1.0


async def test_autoreplay_replays_a_failed_run_from_its_failed_step_until_it_passes(
    tmp_path: Any,
) -> None:
    """A run that finally fails is parked and replayed from its failed step on the zap's
    autoreplay schedule; the steps before it are not run again; a permanent error is not
    replayed; the last try's failure is recorded with the count."""
    from conftest import ATTEMPTS

    from flows.model import STANDARD_AUTOREPLAY, autoreplay_schedule

    model = load_zap_text(
        "zap: replays\ntrigger: {app: builtin, event: catch_hook}\nautoreplay: [1s, 1s, 1s]\n"
        "defaults: {retries: 0}\nsteps:\n"
        "  - {id: first, action: flaky.call, input: {value: '{{ trigger.name }}'}}\n"
        "  - id: call\n    action: flaky.call\n    input:\n"
        "      fail_times: '{{ trigger.fails }}'\n      permanent: '{{ trigger.permanent }}'\n"
        "      value: '{{ steps.first.value }}'\n"
    )
    assert [w.total_seconds() for w in autoreplay_schedule(model)] == [1, 1, 1]
    assert [w.total_seconds() / 60 for w in STANDARD_AUTOREPLAY] == [5, 30, 60, 180, 360]
    inbox = await Inbox.open(f"sqlite+aiosqlite:///{tmp_path / 'inbox.db'}")

    def event(name: str, fails: int, permanent: bool = False) -> Event:
        payload = {"name": name, "fails": fails, "permanent": permanent}
        return Event(
            id=uuid.uuid4().hex, app="builtin", trigger="catch_hook", payload=payload, zap="replays"
        )

    passes, gives_up, refused = event("passes", 2), event("gives-up", 9), event("no", 0, True)
    await inbox.put_many([passes, gives_up, refused])
    dispatcher = Dispatcher(inbox, lambda: [model])
    task = asyncio.create_task(dispatcher.run())

    async def settled() -> dict[str, Any] | None:
        runs = await ledger(inbox, "replays")
        final = len(runs) == 3 and all(r.state in ("completed", "failed") for r in runs.values())
        return runs if final and (await inbox.counts())["done"] == 3 else None

    runs = await until(settled, 30, "the autoreplays end")
    dispatcher.stop()
    await task
    await inbox.close()

    ok = runs[passes.id]
    assert (ok.state, ok.autoreplays) == ("completed", 2)
    assert ATTEMPTS[f"{passes.id}:replays:call"] == 3
    assert ATTEMPTS[f"{passes.id}:replays:first"] == 1  # done before the failure: not again
    out = runs[gives_up.id]
    assert (out.state, out.autoreplays, out.failing_step) == ("failed", 3, "call")
    assert out.message.endswith("(after 3 autoreplays)")
    assert ATTEMPTS[f"{gives_up.id}:replays:call"] == 4
    no = runs[refused.id]
    assert (no.state, no.autoreplays) == ("failed", 0)  # a permanent error: not replayed
    assert "invalid recipient" in no.message
