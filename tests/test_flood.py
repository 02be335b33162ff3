"""Flood protection: above a zap's `flood` limit new runs are held, not dropped; they survive
a restart and are released (they run) or discarded (they never run) by hand."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from typer.testing import CliRunner

from connectors import registry
from flows.cli import app
from flows.events import Event
from flows.intake.dispatcher import Dispatcher, flood_limits
from flows.intake.inbox import Inbox
from flows.loader import load_zap_text

pytestmark = pytest.mark.usefixtures("prefect_api")

FLOODED = load_zap_text(
    "zap: flooded\ntrigger: {app: builtin, event: catch_hook}\nflood: {max: 3, per: 1h}\n"
    "steps:\n  - {id: n, action: builtin.format_text, input: {transform: uppercase, value: x}}\n"
)


def events(count: int) -> list[Event]:
    return [
        Event(id=uuid.uuid4().hex, app="builtin", trigger="catch_hook", payload={}, zap="flooded")
        for _ in range(count)
    ]


async def cli(args: list[str]) -> Any:
    """The command as a user runs it (its own event loop, so on a thread of its own)."""
    return await asyncio.to_thread(CliRunner().invoke, app, args)


async def states(inbox: Inbox) -> dict[str, str]:
    return {r.event_id: r.state for r in await inbox.recent_runs(limit=100, zap="flooded")}


async def serve_until(inbox: Inbox, done: Any, timeout: float = 20) -> None:
    dispatcher = Dispatcher(inbox, lambda: [FLOODED])
    task = asyncio.create_task(dispatcher.run())
    deadline = time.monotonic() + timeout
    try:
        while not await done():
            assert time.monotonic() < deadline, await states(inbox)
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # nothing more happens
    finally:
        dispatcher.stop()
        await task


def test_polling_triggers_are_flood_protected_by_default() -> None:
    polling = next(
        t for a in registry.apps().values() for t in a.triggers.values() if t.kind == "polling"
    )
    text = (
        f"zap: polls\ntrigger: {{app: {polling.app}, event: {polling.name}, connection: main}}\n"
        "steps:\n"
        "  - {id: n, action: builtin.format_text, input: {transform: trim, value: x}}\n"
    )
    polls = load_zap_text(text)
    assert flood_limits([polls, FLOODED]) == {"polls": (100, 600.0), "flooded": (3, 3600.0)}
    off = load_zap_text(text.replace("steps:", "flood: off\nsteps:"))
    assert flood_limits([off]) == {}


async def test_runs_above_the_limit_are_held_across_a_restart_then_released_or_discarded(
    tmp_path: Any,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'inbox.db'}"
    inbox = await Inbox.open(url)
    burst = events(5)
    await inbox.put_many(burst)

    async def three_ran_two_held() -> bool:
        now = await states(inbox)
        return sorted(now.values()) == ["completed"] * 3 + ["held"] * 2

    await serve_until(inbox, three_ran_two_held)
    assert (await inbox.counts())["parked"] == 2  # kept, not dropped, not done
    held = [e.id for e in burst if (await states(inbox))[e.id] == "held"]
    assert held == [e.id for e in burst[3:]]  # the oldest ran first

    # A restart changes nothing: held runs wait for a person.
    async def quiet() -> bool:
        return True

    await serve_until(inbox, quiet)
    assert sorted((await states(inbox)).values()) == ["completed"] * 3 + ["held"] * 2
    listing = await cli(["held", "--inbox", url])
    assert listing.exit_code == 0 and "2 held for flooded" in listing.output, listing.output

    released = await cli(["release", "--zap", "flooded", "--inbox", url])
    assert released.exit_code == 0 and "2 held event(s) released" in released.output

    async def all_ran() -> bool:
        return sorted((await states(inbox)).values()) == ["completed"] * 5

    await serve_until(inbox, all_ran)

    later = events(2)  # 5 ran within the hour: these are held too
    await inbox.put_many(later)

    async def both_held() -> bool:
        now = await states(inbox)
        return all(now.get(e.id) == "held" for e in later)

    await serve_until(inbox, both_held)
    dropped = await cli(["discard", later[0].id, "--inbox", url])
    assert dropped.exit_code == 0 and "1 held event(s) discarded" in dropped.output

    async def discarded_done() -> bool:
        dropped_event = await inbox.get(later[0].id)
        return (await states(inbox))[later[0].id] == "discarded" and dropped_event is not None

    await serve_until(inbox, discarded_done)
    final = await states(inbox)
    assert final[later[1].id] == "held"
    counts = await inbox.counts()
    assert counts["done"] == 6 and counts["parked"] == 1
    usage = await cli(["release", "--inbox", url])
    assert usage.exit_code == 1 and "--zap ID, EVENT ids, or --all" in usage.output
    await inbox.close()
