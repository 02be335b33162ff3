"""Who shares the inbox (`zapflow status`), the single-holder jobs' leases, and the wake-up a
worker on another machine gets when a receiver commits events (PostgreSQL)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from flows.events import Event

if TYPE_CHECKING:
    from inbox_fixtures import Backend

pytest_plugins = ["inbox_fixtures"]  # each test on SQLite, and on PostgreSQL when one is set


async def test_a_lease_has_one_holder_until_it_expires_or_is_let_go(backend: Backend) -> None:
    inbox = await backend.open()
    names = ["poller:a", "poller:b"]
    assert await inbox.take_leases("w1", names, 0.5) == set(names)
    assert await inbox.take_leases("w2", names, 0.5) == set()
    assert await inbox.take_leases("w1", names, 0.5) == set(names)  # renewed
    assert await inbox.take_leases("w1", ["poller:a"], 0.5) == {"poller:a"}  # b let go
    assert await inbox.take_leases("w2", names, 0.5) == {"poller:b"}
    await asyncio.sleep(0.6)  # w1 stopped renewing: a expired
    assert await inbox.take_leases("w2", names, 0.5) == set(names)
    await inbox.drop_leases("w2")
    assert await inbox.take_leases("w1", names, 0.5) == set(names)


async def test_members_say_their_role_host_heartbeat_and_leases(backend: Backend) -> None:
    inbox = await backend.open()
    await inbox.heartbeat("rx-host:10:1", "rx-host", role="receiver")
    await inbox.heartbeat("wk-host:20:1", "wk-host", role="worker")
    await inbox.take_leases("wk-host:20:1", ["poller:orders"], 30)
    members = await inbox.members()
    assert [(m.worker, m.role, m.host) for m in members] == [
        ("rx-host:10:1", "receiver", "rx-host"),
        ("wk-host:20:1", "worker", "wk-host"),
    ]
    assert members[1].leases == ("poller:orders",) and members[0].leases == ()
    assert members[0].seen_at >= members[0].started_at
    await inbox.sign_off("rx-host:10:1")
    assert [m.role for m in await inbox.members()] == ["worker"]


async def test_a_worker_hears_of_events_another_process_commits(backend: Backend) -> None:
    receiver, worker = await backend.open(), await backend.open()
    heard = asyncio.Event()
    listening = await worker.listen(heard.set)
    if backend.name == "sqlite":
        assert listening is None  # one machine: the receiver nudges its serve directly
        return
    assert listening is not None
    try:
        await receiver.put(Event(id="dup", app="builtin", trigger="catch_hook", payload={}))
        await asyncio.wait_for(heard.wait(), 5)
        heard.clear()
        assert not await receiver.put(
            Event(id="dup", app="builtin", trigger="catch_hook", payload={})
        )
        with pytest.raises(TimeoutError):  # a duplicate is nothing new: no wake-up
            await asyncio.wait_for(heard.wait(), 0.5)
    finally:
        await listening.close()
