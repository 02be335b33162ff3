"""Limits held across every serve sharing an inbox: a zap's `concurrency` (runs at once) and
`rate_limit` (runs started per period) queue the runs beyond them — kept, started oldest first
as slots free up — and an app account's API `rate_limit` is counted in the inbox, so processes
sharing it stay under one limit together."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from connectors import ActionContext, App, registry
from connectors._rates import Rate, RateLimiter, parse_rate, use_shared_store
from connectors.cinnox.connection import CinnoxConnection
from flows.events import Event
from flows.intake.db import Gate
from flows.intake.dispatcher import Dispatcher, gates
from flows.intake.inbox import Inbox
from flows.loader import load_zap_text
from flows.model import ZAP_ADAPTER

pytest_plugins = ["inbox_fixtures"]

# An app whose action takes a while and notes how many of its calls overlap.
held = App("holdtest", title="Slow app (tests)")
IN_FLIGHT: dict[str, int] = {}
MOST: dict[str, int] = {}
STARTS: dict[str, list[tuple[float, str]]] = {}


class HoldInput(BaseModel):
    group: str
    seconds: float = 0.3
    n: str = ""


class HoldOutput(BaseModel):
    n: str


@held.action("hold", title="Hold a while")
async def hold(input: HoldInput, ctx: ActionContext) -> HoldOutput:
    """Takes ``seconds``; records when each call started and the most calls at once."""
    group = input.group
    STARTS.setdefault(group, []).append((time.monotonic(), input.n))
    IN_FLIGHT[group] = IN_FLIGHT.get(group, 0) + 1
    MOST[group] = max(MOST.get(group, 0), IN_FLIGHT[group])
    try:
        await asyncio.sleep(input.seconds)
    finally:
        IN_FLIGHT[group] -= 1
    return HoldOutput(n=input.n)


@pytest.fixture(autouse=True, scope="module")
def _held_app():
    """The test app is installed while this module runs (not in the generated docs' run)."""
    registry.register(held)
    yield
    registry.unregister("holdtest")


def zap(name: str, limits: str, seconds: float = 0.3) -> Any:
    return load_zap_text(
        f"zap: {name}\ntrigger: {{app: builtin, event: catch_hook}}\n{limits}\nsteps:\n"
        f"  - id: h\n    action: holdtest.hold\n"
        f"    input: {{group: {name}, seconds: {seconds}, n: '{{{{ trigger.n }}}}'}}\n"
    )


def burst(name: str, count: int) -> list[Event]:
    return [
        Event(
            id=f"{name}-{n:03d}-{uuid.uuid4().hex[:8]}",
            app="builtin",
            trigger="catch_hook",
            payload={"n": str(n)},
            zap=name,
        )
        for n in range(count)
    ]


async def states(inbox: Inbox, name: str) -> dict[str, str]:
    return {r.event_id: r.state for r in await inbox.recent_runs(limit=1000, zap=name)}


async def serve_until(
    inboxes: list[Inbox], zaps: list[Any], done: Callable[[], Awaitable[bool]], timeout: float = 60
) -> set[str]:
    """Run one dispatcher per inbox (as many serves sharing the database) until ``done``;
    returns every ledger state seen meanwhile."""
    dispatchers = [Dispatcher(inbox, lambda: zaps, idle_poll=0.2) for inbox in inboxes]
    tasks = [asyncio.create_task(d.run()) for d in dispatchers]
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    try:
        while not await done():
            for name in {z.zap for z in zaps}:
                seen |= set((await states(inboxes[0], name)).values())
            assert time.monotonic() < deadline, seen
            await asyncio.sleep(0.05)
    finally:
        for dispatcher in dispatchers:
            dispatcher.stop()
        await asyncio.gather(*tasks)
    return seen


def all_completed(inbox: Inbox, name: str, count: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        now = await states(inbox, name)
        return len(now) == count and set(now.values()) == {"completed"}

    return check


@pytest.mark.usefixtures("prefect_api")
async def test_concurrency_holds_across_two_serves_sharing_the_inbox(backend: Any) -> None:
    name = f"two-at-once-{backend.name}"
    limited = zap(name, "concurrency: 2")
    first, second = await backend.open(), await backend.open()
    await first.put_many(burst(name, 8))
    seen = await serve_until([first, second], [limited], all_completed(first, name, 8))
    assert MOST[name] == 2  # two ran at once, never three, though each serve allows 50
    assert sorted(n for _, n in STARTS[name]) == [str(n) for n in range(8)]  # each once
    assert "queued" in seen  # the others waited in the ledger, not in memory
    assert (await first.counts())["done"] == 8


@pytest.mark.usefixtures("prefect_api")
async def test_concurrency_one_runs_events_one_at_a_time_in_order(backend: Any) -> None:
    name = f"one-by-one-{backend.name}"
    inbox = await backend.open()
    await inbox.put_many(burst(name, 6))
    await serve_until([inbox], [zap(name, "concurrency: 1", 0.1)], all_completed(inbox, name, 6))
    assert MOST[name] == 1
    assert [n for _, n in STARTS[name]] == [str(n) for n in range(6)]


@pytest.mark.usefixtures("prefect_api")
async def test_rate_limit_spaces_run_starts_and_loses_none(tmp_path: Any) -> None:
    name = "three-per-2s"
    inbox = await Inbox.open(f"sqlite+aiosqlite:///{tmp_path / 'inbox.db'}")
    await inbox.put_many(burst(name, 7))
    await serve_until([inbox], [zap(name, "rate_limit: 3/2s", 0.01)], all_completed(inbox, name, 7))
    # The limit is on runs starting (the ledger's start times, as every serve counts them).
    ledger = await inbox.recent_runs(limit=100, zap=name)
    times = sorted(r.started_at.timestamp() for r in ledger)
    for i, t in enumerate(times):  # never more than 3 starts in any 2 s
        assert sum(1 for u in times[i:] if u - t < 2.0) <= 3, [u - times[0] for u in times]
    assert times[-1] - times[0] >= 4.0  # 3 now, 3 two seconds later, the 7th after four
    await inbox.close()


async def test_queued_runs_of_a_zap_whose_limit_was_removed_start(backend: Any) -> None:
    inbox = await backend.open()
    first, second = burst("was-limited", 2)
    await inbox.put_many([first, second])
    claimed, started = await inbox.claim_and_start(
        "w", lambda e: ["was-limited"], gates={"was-limited": Gate(concurrency=1)}
    )
    assert started == {(first.id, "was-limited"): "started", (second.id, "was-limited"): "queued"}
    await inbox.finish_runs([], [claimed[0].seq], [claimed[1].seq], [])
    assert (await inbox.claim("w")) == []  # parked: waits for a slot, not for a clock
    if backend.url.startswith("sqlite"):  # what `zapflow runs` shows of it
        from typer.testing import CliRunner

        from flows.cli import app

        shown = await asyncio.to_thread(
            CliRunner().invoke, app, ["runs", "--inbox", backend.url], env={"COLUMNS": "200"}
        )
        assert shown.exit_code == 0, shown.output
        assert "Queued (limit)" in shown.output
        assert "queued: waits for a free slot" in shown.output
        # At 80 columns the runs keep their columns and the message comes whole, underneath.
        shown = await asyncio.to_thread(
            CliRunner().invoke, app, ["runs", "--inbox", backend.url], env={"COLUMNS": "80"}
        )
        assert " was-limited " in shown.output and "was-lim…" not in shown.output
        assert f"\n{second.id[:12]} was-limited: {Gate(concurrency=1).describe()}" in shown.output
    assert await inbox.wake_ungated({"was-limited"}) == 0  # still limited: left alone
    assert await inbox.wake_ungated(set()) == 1  # the limit is gone from the zap file
    claimed, started = await inbox.claim_and_start("w", lambda e: ["was-limited"])
    assert [e.id for e in claimed] == [second.id]
    assert started == {(second.id, "was-limited"): "started"}


def test_limits_are_zap_settings_with_clear_errors() -> None:
    both = zap("both", "concurrency: 3\nrate_limit: 500/min")
    assert gates([both, zap("neither", "")]) == {"both": Gate(3, Rate(500, 60.0))}
    assert both.model_dump(mode="json", exclude_defaults=True)["rate_limit"] == "500/min"
    base = {"zap": "z", "trigger": {"app": "builtin", "event": "catch_hook"}, "steps": []}
    with pytest.raises(ValidationError, match=r"rate_limit[\s\S]*COUNT/PERIOD such as 500/min"):
        ZAP_ADAPTER.validate_python({**base, "rate_limit": "fast"})
    with pytest.raises(ValidationError, match=r"concurrency[\s\S]*greater than or equal to 1"):
        ZAP_ADAPTER.validate_python({**base, "concurrency": 0})
    assert parse_rate("10/s") == Rate(10, 1.0) and str(parse_rate("100/10m")) == "100/10m"
    assert parse_rate("1000 / hour") == Rate(1000, 3600.0)
    with pytest.raises(ValueError, match="period is from 1 second to 1 day"):
        parse_rate("5/2days")


def test_a_cinnox_connection_keeps_cinnox_s_documented_limit_unless_told() -> None:
    plain = CinnoxConnection(app_id="a", app_token="t", base_url="https://x.example")
    assert plain.rate_limit == Rate(500, 60.0)  # 500 requests per minute per service account
    slower = CinnoxConnection.model_validate(
        {**plain.model_dump(), "app_token": "t", "rate_limit": "100/min"}
    )
    assert slower.rate_limit == Rate(100, 60.0)
    assert slower.model_dump()["rate_limit"] == "100/min"  # stored as written
    with pytest.raises(ValidationError, match="not a rate"):
        CinnoxConnection(app_id="a", app_token="t", base_url="https://x.example", rate_limit="x")


async def test_an_account_s_api_limit_is_counted_across_processes_sharing_the_inbox(
    backend: Any,
) -> None:
    one, other = await backend.open(), await backend.open()
    rate = Rate(3, 1.0)
    key = f"cinnox:{uuid.uuid4().hex[:8]}"
    assert [await one.take_rate(key, rate) for _ in range(2)] == [(1, 0.0), (1, 0.0)]
    assert await other.take_rate(key, rate) == (1, 0.0)
    taken, wait = await other.take_rate(key, rate)  # the fourth in the second: refused
    assert taken == 0 and 0 < wait <= 1.0
    assert (await one.take_rate(key, rate))[0] == 0
    assert await one.take_rate("cinnox:another-account", rate, 5) == (3, 1.0)  # per account
    await asyncio.sleep(wait + 0.05)
    assert await one.take_rate(key, rate) == (1, 0.0)

    # Two limiters (as in two processes) on one shared store: 6 calls at 3/s take a second.
    use_shared_store(one)
    try:
        key = f"cinnox:{uuid.uuid4().hex[:8]}"
        limiters = [RateLimiter(key, rate), RateLimiter(key, rate)]
        started = time.monotonic()
        await asyncio.gather(*(limiters[n % 2].wait() for n in range(6)))
        assert time.monotonic() - started >= 0.9
    finally:
        use_shared_store(None)


async def test_calls_waiting_at_once_take_their_slots_in_one_transaction(backend: Any) -> None:
    inbox = await backend.open()
    takes: list[int] = []

    class Counting:
        async def take_rate(self, key: str, rate: Rate, n: int = 1) -> tuple[int, float]:
            takes.append(n)
            return await inbox.take_rate(key, rate, n)

    use_shared_store(Counting())
    try:
        key = f"cinnox:{uuid.uuid4().hex[:8]}"
        limiter = RateLimiter(key, Rate(30, 1.0))
        started = time.monotonic()
        await asyncio.gather(*(limiter.wait() for _ in range(50)))
        elapsed = time.monotonic() - started
    finally:
        use_shared_store(None)
    # 30 slots at once, the other 20 when the window moves on: two or three writes, not 50.
    assert len(takes) <= 4 and takes[1:] and max(takes[1:]) == 20, takes
    assert takes[0] == 50
    assert elapsed >= 0.9  # still no more than 30 in any second


async def test_a_limiter_whose_store_fails_counts_in_process() -> None:
    class Away:
        async def take_rate(self, key: str, rate: Rate, n: int = 1) -> tuple[int, float]:
            raise ConnectionError("the database is away")

    use_shared_store(Away())
    try:
        limiter = RateLimiter("k", Rate(2, 1.0))
        started = time.monotonic()
        for _ in range(3):
            await limiter.wait()
        assert time.monotonic() - started >= 0.9  # still limited, never failing the call
    finally:
        use_shared_store(None)
