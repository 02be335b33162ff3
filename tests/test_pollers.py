"""Polling triggers and schedules as `zapflow serve` runs them: an HTTP JSON list on loopback
whose items change between polls, and cron schedules on a clock the test sets. Each item and
each scheduled moment becomes one event in the inbox, whatever crashes, restarts or second
processes happen in between."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from waiting import until

from connectors._loopback import serve_in_thread
from connectors.builtin.schedule import ScheduleOptions
from connectors.http.client import close_all
from flows.events import derived_id
from flows.intake.db import events
from flows.intake.inbox import Inbox
from flows.intake.pollers import Pollers, PollState, PollStore, latest_moment, next_moment
from flows.loader import load_all, load_zap_text
from flows.model import Zap

if TYPE_CHECKING:
    from inbox_fixtures import Backend

pytest_plugins = ["inbox_fixtures"]  # each test on SQLite, and on PostgreSQL when one is set

# --------------------------------------------------------------------------- the source


@dataclass
class Source:
    """A JSON API on loopback answering `{"data": {"items": [...]}}`, newer than `since` if
    asked; it answers 503 to the next `fail` requests."""

    url: str = ""
    items: list[dict[str, Any]] = field(default_factory=list)
    fail: int = 0
    requests: list[tuple[float, dict[str, str]]] = field(default_factory=list)

    def add(self, *numbers: int) -> None:
        self.items += [{"n": n, "title": f"order {n}"} for n in numbers]

    async def answer(self, request: Request) -> JSONResponse:
        self.requests.append((time.monotonic(), dict(request.query_params)))
        if self.fail:
            self.fail -= 1
            return JSONResponse({"error": "busy"}, status_code=503)
        since = request.query_params.get("since")
        shown = [i for i in self.items if since is None or i["n"] > int(since)]
        return JSONResponse({"data": {"items": shown}})


@pytest.fixture(scope="module")
def running_source() -> Iterator[Source]:
    source = Source()
    with serve_in_thread(Starlette(routes=[Route("/items", source.answer)])) as url:
        source.url = f"{url}/items"
        yield source


@pytest.fixture
def source(running_source: Source) -> Source:
    running_source.items, running_source.requests, running_source.fail = [], [], 0
    return running_source


@pytest.fixture(scope="module", autouse=True)
async def _close_pooled_clients() -> Any:
    yield
    await close_all()


@pytest.fixture
async def inbox(backend: Backend) -> Inbox:
    return await backend.open()


def poll_zap(source: Source, zap_id: str = "new-orders", **options: Any) -> Zap:
    options = {
        "url": source.url,
        "items_path": "data.items",
        "id_field": "n",
        "interval": "50ms",
        **options,
    }
    trigger = {"app": "http", "event": "new_items", "options": options}
    step = {"id": "n", "action": "builtin.lookup", "input": {"key": "a", "table": {"a": 1}}}
    return load_zap_text(json.dumps({"zap": zap_id, "trigger": trigger, "steps": [step]}))


def schedule_zap(cron: str, timezone: str = "UTC", zap_id: str = "morning") -> Zap:
    trigger = {"app": "builtin", "event": "schedule", "options": {"cron": cron}}
    trigger["options"]["timezone"] = timezone
    step = {"id": "n", "action": "builtin.lookup", "input": {"key": "a", "table": {"a": 1}}}
    return load_zap_text(json.dumps({"zap": zap_id, "trigger": trigger, "steps": [step]}))


async def stored(inbox: Inbox) -> list[Any]:
    async with inbox.engine.connect() as conn:
        return list((await conn.execute(sa.select(events).order_by(events.c.seq))).all())


async def polls_after(source: Source, count: int) -> None:
    """Wait until the source has answered ``count`` more requests."""
    start = len(source.requests)
    await until(lambda: len(source.requests) >= start + count)


def pollers_on(inbox: Any, **kwargs: Any) -> Pollers:
    return Pollers(inbox, min_interval=0.01, report=kwargs.pop("report", lambda _: None), **kwargs)


# --------------------------------------------------------------------------- polling


async def test_the_first_poll_notes_what_is_there_and_each_new_item_runs_once(
    source: Source, inbox: Inbox
) -> None:
    source.add(1, 2)
    said: list[str] = []
    pollers = pollers_on(inbox, report=said.append)
    pollers.update([poll_zap(source)])
    store = PollStore(inbox)
    state = await until(lambda: _polled(store, "new-orders"))
    assert await stored(inbox) == []  # history does not flood the zap
    assert state.failures == 0 and state.cursor is None
    assert any("first poll noted 2 item(s)" in line for line in said)

    source.add(3)
    await until(lambda: stored(inbox))
    await polls_after(source, 3)  # the item is still in the list: still one event
    source.add(4, 5)
    await until(lambda: _count(inbox, 3))
    await polls_after(source, 3)
    await pollers.stop()

    rows = await stored(inbox)
    assert [r.payload["n"] for r in rows] == [3, 4, 5]
    first = rows[0]
    assert first.id == derived_id("poll", "new-orders", "3")
    assert (first.app, first.trigger, first.zap) == ("http", "new_items", "new-orders")
    assert first.payload == {"n": 3, "title": "order 3"}
    assert pollers.running == []


async def test_skip_existing_false_runs_the_zap_on_what_is_there(
    source: Source, inbox: Inbox
) -> None:
    source.add(1, 2)
    pollers = pollers_on(inbox)
    pollers.update([poll_zap(source, skip_existing=False)])
    await until(lambda: _count(inbox, 2))
    await polls_after(source, 2)
    await pollers.stop()
    assert [r.payload["n"] for r in await stored(inbox)] == [1, 2]


async def test_a_failing_poll_backs_off_is_recorded_and_recovers(
    source: Source, inbox: Inbox
) -> None:
    source.add(1)
    said: list[str] = []
    pollers = pollers_on(inbox, report=said.append)
    pollers.update([poll_zap(source)])
    store = PollStore(inbox)
    await until(lambda: _polled(store, "new-orders"))

    source.fail = 4
    failing = len(source.requests)
    state = await until(lambda: _failed(store, "new-orders", 2))
    assert "answered HTTP 503" in state.last_error and state.last_error_at is not None
    source.add(2)
    await until(lambda: stored(inbox))  # works again once the source does
    await pollers.stop()

    # Polls every 50 ms; after each failure the pause doubles: 0.1 s, 0.2 s, 0.4 s, 0.8 s.
    times = [t for t, _ in source.requests[failing:]]
    pauses = [later - earlier for earlier, later in zip(times, times[1:], strict=False)][:4]
    assert len(pauses) == 4
    assert all(pause > 0.95 * 0.1 * 2**i for i, pause in enumerate(pauses)), pauses
    state = await store.get("new-orders")
    assert state is not None and state.failures == 0 and state.last_error is None
    assert [r.payload["n"] for r in await stored(inbox)] == [2]
    assert sum("polling failed" in line for line in said) == 1  # once per streak, not per try
    assert any("polling works again" in line for line in said)


class RefusingInbox:
    """The inbox, except that storing events fails while ``refuse`` is set (a full disk, a
    database gone away)."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox, self.refuse = inbox, True
        self.engine, self.write_engine = inbox.engine, inbox.write_engine

    async def put_many(self, new: list[Any]) -> list[bool]:
        if self.refuse:
            raise OSError("disk I/O error")
        return await self.inbox.put_many(new)


async def test_the_cursor_moves_only_once_the_events_are_committed(
    source: Source, inbox: Inbox
) -> None:
    source.add(1, 2)
    refusing = RefusingInbox(inbox)
    pollers = pollers_on(refusing)
    pollers.update([poll_zap(source, cursor_field="n", cursor_param="since")])
    store = PollStore(inbox)
    state = await until(lambda: _polled(store, "new-orders"))
    assert state.cursor == {"last": 2}

    source.add(3)
    state = await until(lambda: _failed(store, "new-orders", 2))
    assert state.cursor == {"last": 2} and "disk I/O error" in (state.last_error or "")
    assert source.requests[-1][1] == {"since": "2"}  # still asking from the old cursor
    refusing.refuse = False
    await until(lambda: stored(inbox))
    state = await until(lambda: _cursor(store, "new-orders", {"last": 3}))
    await pollers.stop()
    assert [r.payload["n"] for r in await stored(inbox)] == [3]


async def test_a_crash_between_commit_and_cursor_re_polls_and_stores_nothing_twice(
    source: Source, inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    source.add(1)
    pollers = pollers_on(inbox)
    pollers.update([poll_zap(source, cursor_field="n", cursor_param="since")])
    store = PollStore(inbox)
    await until(lambda: _polled(store, "new-orders"))

    advance, crashes = PollStore.advance, []

    async def dies_once(self: PollStore, zap: str, fp: str, cursor: Any, *rest: Any) -> bool:
        if cursor == {"last": 2} and not crashes:  # "dies" once item 2's event is committed
            crashes.append(cursor)
            raise ConnectionError("lost the database")
        return await advance(self, zap, fp, cursor, *rest)

    monkeypatch.setattr(PollStore, "advance", dies_once)
    source.add(2)
    await until(lambda: _cursor(store, "new-orders", {"last": 2}))
    await pollers.stop()
    assert crashes and [r.payload["n"] for r in await stored(inbox)] == [2]
    # Polled twice from the old cursor; the second copy of the event was a duplicate.
    assert (inbox.stats.events, inbox.stats.new) == (2, 1)


async def test_a_restart_continues_from_the_stored_cursor(source: Source, backend: Backend) -> None:
    source.add(1, 2)
    first = await backend.open()
    pollers = pollers_on(first)
    zap = poll_zap(source, cursor_field="n", cursor_param="since")
    pollers.update([zap])
    await until(lambda: _polled(PollStore(first), "new-orders"))
    source.add(3)
    await until(lambda: stored(first))
    await pollers.stop()
    await first.close()

    source.add(4, 5)  # while nothing runs
    again = await backend.open()
    asked = len(source.requests)
    pollers = pollers_on(again)
    pollers.update([zap])
    await until(lambda: _count(again, 3))
    await pollers.stop()
    assert source.requests[asked][1] == {"since": "3"}
    assert [r.payload["n"] for r in await stored(again)] == [3, 4, 5]


async def test_changed_trigger_settings_start_afresh_and_a_removed_zap_stops(
    source: Source, inbox: Inbox
) -> None:
    source.add(1)
    pollers = pollers_on(inbox)
    pollers.update([poll_zap(source, id_field="n")])
    store = PollStore(inbox)
    before = await until(lambda: _polled(store, "new-orders"))
    # Now the zap dedupes on the title: a first poll again, so nothing floods.
    pollers.update([poll_zap(source, id_field="title")])
    await until(lambda: _state(store, "new-orders", lambda s: s.fingerprint != before.fingerprint))
    await polls_after(source, 2)
    assert await stored(inbox) == []
    assert pollers.running == ["new-orders"]

    pollers.update([])
    assert pollers.running == []
    await asyncio.sleep(0.1)
    asked = len(source.requests)
    await asyncio.sleep(0.2)
    assert len(source.requests) == asked
    await pollers.stop()


async def _state(store: PollStore, zap: str, ok: Callable[[PollState], bool]) -> Any:
    state = await store.get(zap)
    return state if state is not None and ok(state) else None


def _polled(store: PollStore, zap: str) -> Any:
    return _state(store, zap, lambda s: s.last_polled_at is not None)


def _failed(store: PollStore, zap: str, times: int) -> Any:
    return _state(store, zap, lambda s: s.failures >= times)


def _cursor(store: PollStore, zap: str, cursor: dict[str, Any]) -> Any:
    return _state(store, zap, lambda s: s.cursor == cursor)


async def _count(inbox: Inbox, n: int) -> bool:
    return len(await stored(inbox)) >= n


# --------------------------------------------------------------------------- schedules


def test_cron_and_time_zone_problems_name_the_file_and_the_field(write_zap: Any) -> None:
    folder = write_zap(
        "zap: morning\n"
        "trigger:\n"
        "  app: builtin\n"
        "  event: schedule\n"
        "  options: {cron: '0 25 * * *', timezone: Asia/HongKong}\n"
        "steps:\n"
        "  - {id: n, action: builtin.lookup, input: {key: a, table: {a: 1}}}\n",
        "morning.yaml",
    ).parent
    write_zap(
        "zap: nightly\n"
        "trigger: {app: builtin, event: schedule}\n"
        "steps:\n"
        "  - {id: n, action: builtin.lookup, input: {key: a, table: {a: 1}}}\n",
        "nightly.yaml",
    )
    loaded, problems = load_all([folder])
    assert loaded == []
    shown = [str(p).removeprefix(f"{folder}/") for p in problems]
    assert shown[0].startswith("morning.yaml:5:19: trigger.options.cron: '0 25 * * *' is not a ")
    assert "cron expression: bad hour; expected five fields" in shown[0]
    assert shown[1].startswith("morning.yaml:5:43: trigger.options.timezone: unknown time zone")
    assert "'Asia/HongKong' (did you mean 'Asia/Hong_Kong'?)" in shown[1]
    assert shown[2] == "nightly.yaml:2:10: trigger.options.cron: required field 'cron' is missing"


def test_cron_aliases_and_moments_in_a_time_zone() -> None:
    assert ScheduleOptions(cron="@daily").cron == "0 0 * * *"
    assert ScheduleOptions(cron=" 0  9 * * mon-fri ").cron == "0 9 * * mon-fri"
    zone = ZoneInfo("Asia/Hong_Kong")
    friday_noon = datetime(2026, 11, 27, 4, 0, tzinfo=UTC)  # 12:00 in Hong Kong
    latest = latest_moment("0 9 * * MON-FRI", zone, friday_noon)
    assert latest.isoformat() == "2026-11-27T09:00:00+08:00"
    upcoming = next_moment("0 9 * * MON-FRI", zone, friday_noon)
    assert upcoming.isoformat() == "2026-11-30T09:00:00+08:00"  # Monday
    on_the_dot = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)
    assert latest_moment("0 9 * * MON-FRI", zone, on_the_dot) == on_the_dot


class Clock:
    """Real time, shifted so that it reads ``start`` now: a schedule's moment comes when the
    test wants it, and time goes on as it does."""

    def __init__(self, start: datetime) -> None:
        self.shift = start - datetime.now(UTC)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.shift


async def test_a_schedule_fires_into_the_inbox_with_a_deterministic_id(inbox: Inbox) -> None:
    # 08:59:58 in Hong Kong: the 09:00 moment is 2 s away (a schedule started after its moment
    # rightly does not fire it, so a loaded machine needs the margin).
    clock = Clock(datetime(2026, 11, 27, 0, 59, 58, tzinfo=UTC))
    woken: list[bool] = []
    pollers = pollers_on(inbox, clock=clock, on_new=lambda: woken.append(True))
    pollers.update([schedule_zap("0 9 * * MON-FRI", "Asia/Hong_Kong")])
    rows = await until(lambda: stored(inbox), timeout=10)
    await pollers.stop()

    (row,) = rows
    assert row.id == derived_id("schedule", "morning", "2026-11-27T01:00:00+00:00")
    assert (row.app, row.trigger, row.zap) == ("builtin", "schedule", "morning")
    assert row.payload["scheduled_at"] == "2026-11-27T09:00:00+08:00"
    assert row.payload["timezone"] == "Asia/Hong_Kong" and row.payload["missed"] is False
    fired = datetime.fromisoformat(row.payload["fired_at"])
    assert timedelta(0) <= fired - datetime(2026, 11, 27, 1, 0, tzinfo=UTC) < timedelta(seconds=1)
    assert woken == [True]


async def test_two_schedulers_on_one_inbox_fire_a_moment_once(backend: Backend) -> None:
    inboxes = [await backend.open(), await backend.open()]
    clock = Clock(datetime(2026, 11, 27, 0, 59, 58, tzinfo=UTC))  # the moment is 2 s away
    both = [pollers_on(each, clock=clock) for each in inboxes]
    for pollers in both:
        pollers.update([schedule_zap("* * * * *")])
    await until(lambda: stored(inboxes[0]), timeout=10)
    await asyncio.sleep(0.3)  # the slower of the two has had its turn
    for pollers in both:
        await pollers.stop()
    rows = await stored(inboxes[0])
    assert [r.id for r in rows] == [derived_id("schedule", "morning", "2026-11-27T01:00:00+00:00")]
    # The second either found the moment done or its event a duplicate of the first's.
    assert sum(each.stats.new for each in inboxes) == 1


async def test_a_second_process_starting_the_same_poller_keeps_the_first_ones_cursor(
    backend: Backend,
) -> None:
    # Two `zapflow serve` on one inbox start a new schedule at once: the one that set its first
    # cursor wins; the other neither wipes it (which lost the first moment) nor overwrites it.
    first, second = [PollStore(await backend.open()) for _ in range(2)]
    now = datetime(2026, 11, 27, 0, 59, 59, tzinfo=UTC)
    assert (await first.begin("morning", "f1")).cursor is None
    assert (await second.begin("morning", "f1")).cursor is None
    mine = {"done_until": now.isoformat()}
    assert await first.advance("morning", "f1", mine, (), now, first=True)
    theirs = {"done_until": (now + timedelta(seconds=2)).isoformat()}
    assert not await second.advance("morning", "f1", theirs, (), now, first=True)
    assert (await second.begin("morning", "f1")).cursor == mine
    # Other settings still start afresh.
    assert (await second.begin("morning", "f2")).cursor is None


async def test_moments_missed_while_down_fire_once_the_latest(backend: Backend) -> None:
    hourly = schedule_zap("0 * * * *")

    async def run_at(moment: datetime, done_until: str) -> list[Any]:
        inbox = await backend.open()
        pollers = pollers_on(inbox, clock=lambda: moment)
        pollers.update([hourly])
        await until(lambda: _cursor(PollStore(inbox), "morning", {"done_until": done_until}))
        await asyncio.sleep(0.1)  # time for anything more it would wrongly do
        await pollers.stop()
        rows = await stored(inbox)
        await inbox.close()
        return rows

    # A new schedule fires from now on: not the 08:00 moment that has passed.
    at_0830 = datetime(2026, 11, 27, 8, 30, tzinfo=UTC)
    assert await run_at(at_0830, "2026-11-27T08:30:00+00:00") == []
    # Down from 08:30 to 12:30: 09:00, 10:00, 11:00 and 12:00 were missed; 12:00 fires.
    at_1230 = datetime(2026, 11, 27, 12, 30, tzinfo=UTC)
    rows = await run_at(at_1230, "2026-11-27T12:00:00+00:00")
    assert [r.payload["scheduled_at"] for r in rows] == ["2026-11-27T12:00:00+00:00"]
    assert rows[0].payload["missed"] is True
    # Started again within the hour: nothing more.
    at_1240 = datetime(2026, 11, 27, 12, 40, tzinfo=UTC)
    assert len(await run_at(at_1240, "2026-11-27T12:00:00+00:00")) == 1


# --------------------------------------------------------------------------- several workers


async def test_a_zaps_poller_runs_on_one_worker_and_passes_over_when_that_one_dies(
    source: Source, backend: Backend
) -> None:
    """Workers sharing the inbox hold each zap's poller under a lease: one polls; when it
    dies (no goodbye), another takes the zap over from the stored cursor once the lease ends."""
    first_inbox, second_inbox = await backend.open(), await backend.open()
    zap = poll_zap(source, skip_existing=False)
    source.add(1)
    first = pollers_on(first_inbox, holder="host-a:1:1", lease=1.0)
    second = pollers_on(second_inbox, holder="host-b:2:2", lease=1.0)
    first.update([zap])
    await until(lambda: first.held == {"new-orders"})
    second.update([zap])
    await until(lambda: _count(first_inbox, 1))
    await asyncio.sleep(1.5)  # several renewals: the lease stays where it is
    assert first.held == {"new-orders"} and second.held == set()
    [member_leases] = [await first_inbox.take_leases("host-c:3:3", ["poller:new-orders"], 1.0)]
    assert member_leases == set()  # nobody else gets it either

    # The first dies: its tasks end without letting the lease go.
    assert first._keeper is not None
    for task in [first._keeper, *(t for _, t in first._tasks.values())]:
        task.cancel()
    died = time.monotonic()
    await until(lambda: second.held == {"new-orders"}, timeout=5)
    # Within the lease and a renewal (1.33 s), plus what a loaded CI machine adds.
    assert time.monotonic() - died < 4.0
    source.add(2)
    await until(lambda: _count(second_inbox, 2))
    await second.stop()
    assert [r.payload["n"] for r in await stored(second_inbox)] == [1, 2]


async def test_a_worker_that_stops_gracefully_hands_its_pollers_over_at_once(
    source: Source, backend: Backend
) -> None:
    first_inbox, second_inbox = await backend.open(), await backend.open()
    zap = poll_zap(source)
    first = pollers_on(first_inbox, holder="host-a:1:1", lease=30.0)
    second = pollers_on(second_inbox, holder="host-b:2:2", lease=30.0)
    first.update([zap])
    await until(lambda: first.held == {"new-orders"})
    second.update([zap])
    await first.stop()
    second._renew_now.set()  # its next round, without waiting a third of the lease
    await until(lambda: second.held == {"new-orders"}, timeout=3)
    await second.stop()
    assert await second_inbox.take_leases("host-c:3:3", ["poller:new-orders"], 1.0) == {
        "poller:new-orders"
    }
