"""The durable inbox, on real databases: a SQLite file, and PostgreSQL when one is configured.

Every behaviour test runs on both backends (``inbox_fixtures``). PostgreSQL tests need
``ZAPFLOW_TEST_POSTGRES_URL`` (e.g. ``postgresql+asyncpg://postgres@127.0.0.1:5432/test``).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from flows.events import Event
from flows.intake.db import VERSION_TABLE, InboxError, RunResult, metadata
from flows.intake.inbox import Inbox

if TYPE_CHECKING:
    from inbox_fixtures import Backend

pytest_plugins = ["inbox_fixtures"]

ROOT = Path(__file__).resolve().parent.parent


def event(event_id: str, **payload: Any) -> Event:
    return Event(id=event_id, app="test", trigger="thing_happened", payload=payload)


# -- accepting events ----------------------------------------------------------------------


async def test_put_returns_once_a_new_inbox_can_see_the_event(backend: Backend) -> None:
    writer = await backend.open()
    assert await writer.put(event("e-1", n=1)) is True
    # A second inbox (its own engine and connections) on the same URL, writer still open.
    reader = await backend.open()
    stored = await reader.get("e-1")
    assert stored is not None
    assert (stored.app, stored.trigger, stored.payload) == ("test", "thing_happened", {"n": 1})
    assert stored.received_at.tzinfo is not None
    assert await reader.counts() == {"pending": 1, "claimed": 0, "parked": 0, "done": 0}


CRASHING_WRITER = """
import asyncio, os, sys
from flows.events import Event
from flows.intake.inbox import Inbox

async def main():
    inbox = await Inbox.open(sys.argv[1], schema=sys.argv[2] or None)
    events = [Event(id=f"crash-{i}", app="t", trigger="t", payload={}) for i in range(50)]
    acked = await asyncio.gather(*(inbox.put(e) for e in events))
    print(sum(acked), flush=True)
    os._exit(0)  # die on the spot: no close, no flush, no cleanup of any kind

asyncio.run(main())
"""


async def test_acknowledged_events_survive_the_process_dying(backend: Backend) -> None:
    await (await backend.open()).close()  # create the schema first: the child only writes
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASHING_WRITER,
        backend.url,
        backend.schema or "",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await child.communicate()
    assert out.decode().strip() == "50"
    inbox = await backend.open()
    assert await inbox.counts() == {"pending": 50, "claimed": 0, "parked": 0, "done": 0}


async def test_duplicates_are_recognised_and_stored_once(backend: Backend) -> None:
    inbox = await backend.open()
    assert await inbox.put(event("dup", n=1)) is True
    assert await inbox.put(event("dup", n=2)) is False
    # Within one batch too: the first occurrence decides, the later ones are duplicates.
    assert await inbox.put_many([event("a"), event("a"), event("dup"), event("b")]) == [
        True,
        False,
        False,
        True,
    ]
    racing = await asyncio.gather(*(inbox.put(event("race")) for _ in range(20)))
    assert sorted(racing) == [False] * 19 + [True]
    assert await inbox.counts() == {"pending": 4, "claimed": 0, "parked": 0, "done": 0}
    stored = await inbox.get("dup")
    assert stored is not None and stored.payload == {"n": 1}  # the first delivery is kept


async def test_concurrent_puts_are_group_committed(backend: Backend) -> None:
    inbox = await backend.open()
    started = time.perf_counter()
    results = await asyncio.gather(*(inbox.put(event(f"burst-{i}", i=i)) for i in range(1000)))
    burst = time.perf_counter() - started
    assert results == [True] * 1000
    assert inbox.stats.commits <= 10, inbox.stats
    assert inbox.stats.new == 1000
    assert (await inbox.counts())["pending"] == 1000

    # The receiver's shape: 50 senders, each waiting for its acknowledgement before the next.
    acks: list[float] = []

    async def sender(n: int) -> None:
        for i in range(40):
            t0 = time.perf_counter()
            await inbox.put(event(f"sender-{n}-{i}"))
            acks.append(time.perf_counter() - t0)

    commits_before = inbox.stats.commits
    started = time.perf_counter()
    await asyncio.gather(*(sender(n) for n in range(50)))
    senders = time.perf_counter() - started
    acks.sort()
    print(
        f"\n[{backend.name}] 1,000 concurrent puts: {1000 / burst:,.0f} puts/s "
        f"in {commits_before} commits; "
        f"50 senders x 40 puts: {2000 / senders:,.0f} puts/s, "
        f"ack p50 {statistics.median(acks) * 1000:.1f} ms, "
        f"p99 {acks[int(len(acks) * 0.99)] * 1000:.1f} ms, "
        f"{inbox.stats.commits - commits_before} commits"
    )


async def test_one_bad_event_does_not_fail_its_batch(backend: Backend) -> None:
    inbox = await backend.open()
    bad = event("bad", when=object())  # not JSON-serialisable
    results = await asyncio.gather(
        inbox.put(event("good-1")),
        inbox.put(bad),
        inbox.put(event("good-2")),
        return_exceptions=True,
    )
    assert results[0] is True and results[2] is True
    assert isinstance(results[1], Exception)
    assert await inbox.get("bad") is None
    assert await inbox.counts() == {"pending": 2, "claimed": 0, "parked": 0, "done": 0}


async def test_a_payload_nested_too_deep_is_refused_whoever_puts_it(backend: Backend) -> None:
    """Pollers and schedules put events too: the nesting limit holds for them as at the door."""
    from flows.events import MAX_DEPTH, TooDeep

    inbox = await backend.open()
    deep: Any = 1
    for _ in range(MAX_DEPTH):
        deep = {"a": deep}
    with pytest.raises(TooDeep, match="more than 64 levels deep"):
        await inbox.put(event("deep", x=deep))
    with pytest.raises(TooDeep):
        await inbox.put_many([event("ok"), event("deep-2", x=[deep])])
    assert await inbox.put(event("at-limit", x=deep["a"])) is True
    assert await inbox.get("deep") is None and await inbox.get("ok") is None
    assert await inbox.counts() == {"pending": 1, "claimed": 0, "parked": 0, "done": 0}


async def test_close_writes_pending_puts_first(backend: Backend) -> None:
    inbox = await backend.open(batch_wait=0.05)
    puts = [asyncio.create_task(inbox.put(event(f"late-{i}"))) for i in range(100)]
    await asyncio.sleep(0)  # let them queue
    await inbox.close()
    assert [p.result() for p in puts] == [True] * 100
    with pytest.raises(InboxError, match="closed"):
        await inbox.put(event("after-close"))
    assert (await (await backend.open()).counts())["pending"] == 100


async def test_a_dispatcher_in_the_same_process_is_woken_by_puts(backend: Backend) -> None:
    inbox = await backend.open()
    assert await inbox.wait_for_events(0.01) is False
    waiter = asyncio.create_task(inbox.wait_for_events(5))
    await inbox.put(event("wake"))
    assert await waiter is True
    await inbox.put(event("wake"))  # a duplicate is nothing new
    assert await inbox.wait_for_events(0.01) is False


# -- claiming ------------------------------------------------------------------------------


async def test_each_event_goes_to_exactly_one_of_two_claimers(backend: Backend) -> None:
    first, second = await backend.open(), await backend.open()
    await first.put_many([event(f"c-{i}") for i in range(300)])

    async def drain(inbox: Inbox, worker: str) -> list[int]:
        taken: list[int] = []
        while batch := await inbox.claim(worker, limit=7):
            taken += [e.seq for e in batch]
            assert [e.seq for e in batch] == sorted(e.seq for e in batch)
            assert {e.attempts for e in batch} == {1}
            await asyncio.sleep(0.002)  # like a dispatcher between batches: the other gets turns
        return taken

    one, two = await asyncio.gather(drain(first, "w1"), drain(second, "w2"))
    assert one and two, "both claimers should have taken part"
    assert not set(one) & set(two)
    assert len(one) + len(two) == 300
    assert await first.counts() == {"pending": 0, "claimed": 300, "parked": 0, "done": 0}


async def test_claim_takes_the_oldest_first(backend: Backend) -> None:
    inbox = await backend.open()
    await inbox.put_many([event(f"o-{i}", i=i) for i in range(10)])
    claimed = await inbox.claim("w", limit=3)
    assert [e.id for e in claimed] == ["o-0", "o-1", "o-2"]
    assert [e.payload["i"] for e in await inbox.claim("w", limit=3)] == [3, 4, 5]


async def test_an_expired_lease_is_reclaimed_by_another_worker(backend: Backend) -> None:
    inbox = await backend.open()
    await inbox.put(event("lost"))
    [first] = await inbox.claim("dies", lease=1.0)
    assert first.attempts == 1
    assert await inbox.claim("other") == []  # leased
    await asyncio.sleep(1.05)
    [again] = await inbox.claim("other", lease=60)
    assert (again.id, again.seq, again.attempts) == ("lost", first.seq, 2)
    # The dead worker, back to life, cannot extend what it lost.
    await inbox.extend("dies", [first.seq], 0.0)
    assert await inbox.claim("third") == []


async def test_extend_keeps_a_lease_alive(backend: Backend) -> None:
    inbox = await backend.open()
    await inbox.put(event("slow"))
    [claimed] = await inbox.claim("w", lease=0.2)
    await inbox.extend("w", [claimed.seq], 60)
    await asyncio.sleep(0.25)
    assert await inbox.claim("other") == []
    assert await inbox.counts() == {"pending": 0, "claimed": 1, "parked": 0, "done": 0}


async def test_done_events_are_not_claimed_again(backend: Backend) -> None:
    inbox = await backend.open()
    await inbox.put_many([event("d-1"), event("d-2")])
    await inbox.done([e.seq for e in await inbox.claim("w", lease=0.01)])
    await asyncio.sleep(0.02)  # past the lease: done is done regardless
    assert await inbox.claim("w") == []
    assert await inbox.counts() == {"pending": 0, "claimed": 0, "parked": 0, "done": 2}


async def test_release_with_delay_hides_the_event_until_then(backend: Backend) -> None:
    inbox = await backend.open()
    await inbox.put_many([event("later"), event("now")])
    later, now = await inbox.claim("w")
    await inbox.release([later.seq], delay=0.3)
    await inbox.release([now.seq])
    assert await inbox.counts() == {"pending": 2, "claimed": 0, "parked": 0, "done": 0}
    [again] = await inbox.claim("w")
    assert (again.id, again.attempts) == ("now", 2)
    await asyncio.sleep(0.35)
    [delayed] = await inbox.claim("w")
    assert (delayed.id, delayed.attempts) == ("later", 2)


# -- the (event, zap) run ledger -----------------------------------------------------------


async def test_the_ledger_runs_each_event_and_zap_once(backend: Backend) -> None:
    inbox = await backend.open()
    assert await inbox.start_run("e", "zap-a") is True
    assert await inbox.start_run("e", "zap-a") is False  # running, and recently started
    assert await inbox.start_run("e", "zap-b") is True  # another zap on the same event
    await inbox.finish_run("e", "zap-a", "completed", flow_run_id="fr-1")
    assert await inbox.start_run("e", "zap-a") is False
    assert await inbox.start_run("e", "zap-a", stale_after=0) is False  # finished is final
    assert await inbox.run_state("e", "zap-a") == "completed"
    assert await inbox.run_state("e", "zap-c") is None
    for state in ("filtered", "failed"):
        assert await inbox.start_run(state, "z") is True
        await inbox.finish_run(state, "z", state)
        assert await inbox.start_run(state, "z", stale_after=0) is False
    # Whatever way it ended, it ran.
    assert await inbox.start_run("crashed", "z") is True
    await inbox.finish_run("crashed", "z", "crashed")
    assert await inbox.start_run("crashed", "z", stale_after=0) is False
    # A run given back because it could not start may be started again, at once.
    await inbox.abandon_run("e", "zap-b")
    assert await inbox.run_state("e", "zap-b") == "abandoned"
    assert await inbox.start_run("e", "zap-b") is True
    assert await inbox.start_run("e", "zap-b") is False


async def test_the_ledger_holds_across_a_crash_and_restart(backend: Backend) -> None:
    crashed = await backend.open()
    assert await crashed.start_run("e", "finished") is True
    await crashed.finish_run("e", "finished", "completed")
    assert await crashed.start_run("e", "interrupted") is True
    # The process dies here: no finish_run for "interrupted". A restarted dispatcher:
    restarted = await backend.open()
    assert await restarted.start_run("e", "finished") is False
    assert await restarted.start_run("e", "finished", stale_after=0) is False
    assert await restarted.start_run("e", "interrupted") is False  # may still be running
    assert await restarted.run_state("e", "interrupted") == "running"
    assert await restarted.start_run("e", "interrupted", stale_after=0) is True  # stale: take over
    assert await crashed.start_run("e", "interrupted") is False  # and only one takes over


async def test_concurrent_starts_of_one_run_let_exactly_one_through(backend: Backend) -> None:
    first, second = await backend.open(), await backend.open()
    started = await asyncio.gather(
        *(inbox.start_run(f"e-{i}", "z") for i in range(20) for inbox in (first, second))
    )
    assert started.count(True) == 20


# -- retention, tokens, migrations ---------------------------------------------------------


async def test_purge_deletes_old_done_events_and_their_ledger_rows(backend: Backend) -> None:
    inbox = await backend.open()
    await inbox.put_many([event("old-1"), event("old-2"), event("open")])
    old1, old2, _ = await inbox.claim("w")
    for e in (old1, old2):
        assert await inbox.start_run(e.id, "z")
        await inbox.finish_run(e.id, "z", "completed")
    assert await inbox.start_run("open", "z")
    await inbox.done([old1.seq, old2.seq])
    assert await inbox.purge(timedelta(hours=1)) == 0  # not old enough yet
    await asyncio.sleep(0.01)
    assert await inbox.purge(timedelta(0)) == 2
    assert await inbox.counts() == {"pending": 0, "claimed": 1, "parked": 0, "done": 0}
    assert await inbox.get("old-1") is None
    assert await inbox.run_state("old-1", "z") is None
    assert await inbox.run_state("open", "z") == "running"
    assert await inbox.purge(timedelta(0)) == 0


async def test_hook_tokens_are_stable_and_distinct(backend: Backend) -> None:
    inbox = await backend.open()
    main = await inbox.hook_token("cinnox", "main")
    assert len(main) >= 43  # 32 random bytes
    assert await inbox.hook_token("cinnox", "main") == main
    others = {await inbox.hook_token(*hook) for hook in [("cinnox", "other"), ("catch", "main")]}
    assert len(others | {main}) == 3
    await inbox.close()

    reopened = await backend.open()
    assert await reopened.hook_token("cinnox", "main") == main
    rotated = await reopened.rotate_hook_token("cinnox", "main")
    assert rotated != main
    assert await reopened.hook_token("cinnox", "main") == rotated
    assert await reopened.hook_token("catch", "main") in others


async def test_reopening_an_existing_inbox_migrates_nothing(backend: Backend) -> None:
    first = await backend.open()
    assert first.applied_migrations == (
        "0001",
        "0002",
        "0003",
        "0004",
        "0005",
        "0006",
        "0007",
        "0008",
        "0009",
        "0010",
        "0011",
    )
    await first.put(event("kept"))
    await first.close()
    again = await backend.open()
    assert again.applied_migrations == ()
    assert await again.get("kept") is not None

    def differences(conn: sa.Connection) -> list[Any]:
        context = MigrationContext.configure(
            conn, opts={"version_table": VERSION_TABLE, "compare_type": True}
        )
        assert context.get_current_revision() == "0011"
        return list(compare_metadata(context, metadata))

    # What the migrations built is what the queries expect.
    async with again.engine.connect() as conn:
        assert await conn.run_sync(differences) == []


async def test_an_inbox_made_before_parking_upgrades_keeping_its_events(backend: Backend) -> None:
    """Migration 0008 copies SQLite's events table (to change its state CHECK): events, runs
    and checkpoints survive, seqs go on after the highest ever used, and claims use the new
    index of claimable events."""
    from alembic import command

    from flows.intake.db import _alembic_config, make_engine

    engine = make_engine(backend.url, schema=backend.schema)

    def to_0007(conn: sa.Connection) -> None:
        if backend.schema:
            conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{backend.schema}"')
        cfg = _alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0007")

    async with engine.execution_options(zapflow_write=True).begin() as conn:
        await conn.run_sync(to_0007)
        for seq in (1, 2, 3):
            await conn.execute(
                sa.text(
                    "INSERT INTO zapflow_events (id, app, trigger, payload, received_at, "
                    "state, available_at, attempts) VALUES (:id, 'a', 't', '{}', "
                    "CURRENT_TIMESTAMP, :state, CURRENT_TIMESTAMP, 0)"
                ),
                {"id": f"old-{seq}", "state": "done" if seq == 3 else "pending"},
            )
        await conn.execute(
            sa.text(
                "INSERT INTO zapflow_steps (event_id, zap, step, status, output, finished_at) "
                "VALUES ('old-1', 'z', 's', 'completed', '{\"n\": 1}', CURRENT_TIMESTAMP)"
            )
        )
        # The newest event was purged: its seq must not be given again.
        purged = await conn.execute(
            sa.text("DELETE FROM zapflow_events WHERE id = 'old-3' RETURNING seq")
        )
        highest = purged.scalar_one()
    await engine.dispose()
    inbox = await backend.open()
    assert inbox.applied_migrations == ("0008", "0009", "0010", "0011")
    assert await inbox.put(event("new"))
    new = await inbox.get("new")
    assert new is not None and new.seq > highest
    claimed = await inbox.claim("w", limit=10)
    assert [e.id for e in claimed] == ["old-1", "old-2", "new"]
    assert (await inbox.load_steps([("old-1", "z")]))[("old-1", "z")] == {
        "s": ("completed", {"n": 1})
    }
    if backend.name == "sqlite":
        async with inbox.engine.connect() as conn:
            plan = await conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN SELECT seq FROM zapflow_events WHERE "
                "state <> 'done' AND state <> 'parked' AND available_at <= '2100-01-01' "
                "ORDER BY seq LIMIT 10"
            )
            assert "ix_zapflow_events_waiting" in " ".join(str(r) for r in plan.all())


async def test_inboxes_opening_a_fresh_database_at_once_migrate_it_once(backend: Backend) -> None:
    opened = await asyncio.gather(*(backend.open() for _ in range(3)))
    assert sorted(inbox.applied_migrations for inbox in opened) == [
        (),
        (),
        ("0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008", "0009", "0010", "0011"),
    ]


# -- SQLite specifics ----------------------------------------------------------------------


async def test_sqlite_inbox_is_durable_by_default(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("ZAPFLOW_HOME", str(tmp_path / "state"))
    inbox = await Inbox.open()
    try:
        assert (tmp_path / "state" / "inbox.db").exists()
        async with inbox.engine.connect() as conn:
            pragma = conn.exec_driver_sql
            assert (await pragma("PRAGMA journal_mode")).scalar() == "wal"
            assert (await pragma("PRAGMA synchronous")).scalar() == 2  # FULL
            assert (await pragma("PRAGMA busy_timeout")).scalar_one() > 0
    finally:
        await inbox.close()


async def test_plain_urls_get_an_async_driver_and_memory_is_refused(tmp_path: Path) -> None:
    inbox = await Inbox.open(f"sqlite:///{tmp_path / 'plain.db'}")
    assert inbox.engine.url.drivername == "sqlite+aiosqlite"
    await inbox.close()
    with pytest.raises(InboxError, match="in-memory"):
        await Inbox.open("sqlite+aiosqlite:///:memory:")
    with pytest.raises(InboxError, match="PostgreSQL"):
        await Inbox.open(f"sqlite:///{tmp_path / 'x.db'}", schema="nope")


async def test_claiming_enters_the_claimed_events_runs_in_the_ledger_in_one_go(
    backend: Backend,
) -> None:
    """What a dispatcher does before running anything: both or neither are committed."""
    inbox = await backend.open()
    await inbox.put_many([event("a"), event("b"), event("c")])
    await inbox.start_runs([("b", "z1")], worker="h:9")  # already running elsewhere
    zaps_of = {"a": ["z1", "z2"], "b": ["z1"], "c": []}
    claimed, states = await inbox.claim_and_start(
        "h:1", lambda e: zaps_of[e.id], limit=10, lease=60
    )
    assert [e.id for e in claimed] == ["a", "b", "c"]
    assert states == {("a", "z1"): "started", ("a", "z2"): "started", ("b", "z1"): "running"}
    assert await inbox.running_workers([("a", "z1"), ("a", "z2")]) == {"h:1"}
    # Claimed under the lease: another dispatcher gets nothing, and starts nothing.
    assert await inbox.claim_and_start("h:2", lambda e: ["z1"], limit=10, lease=60) == ([], {})

    def broken(_event: Any) -> list[str]:
        raise RuntimeError("zaps could not be matched")

    await inbox.put(event("d"))
    with pytest.raises(RuntimeError):
        await inbox.claim_and_start("h:3", broken, limit=10, lease=60)
    # Nothing of it was committed: "d" is still there to claim.
    assert [e.id for e in await inbox.claim("h:4", limit=10)] == ["d"]


async def test_bulk_ledger_starts_finishes_and_lists_runs(backend: Backend) -> None:
    inbox = await backend.open()
    await inbox.put_many([event("a"), event("b")])
    states = await inbox.start_runs([("a", "z1"), ("a", "z2"), ("b", "z1")], worker="h:1")
    assert set(states.values()) == {"started"} and len(states) == 3
    # Once started, the same pairs are refused (running), whoever asks.
    again = await inbox.start_runs([("a", "z1"), ("b", "z2")], worker="h:2")
    assert again == {("a", "z1"): "running", ("b", "z2"): "started"}
    assert await inbox.running_workers([("a", "z1"), ("b", "z2")]) == {"h:1", "h:2"}
    # A worker known dead loses its running runs at once; a live one keeps them.
    taken = await inbox.start_runs([("a", "z1"), ("b", "z2")], worker="h:3", dead_workers=["h:1"])
    assert taken == {("a", "z1"): "started", ("b", "z2"): "running"}

    claimed = await inbox.claim("h:3")
    await inbox.finish_runs(
        [
            RunResult("a", "z1", "failed", "fr-1", failing_step="sms", message="boom"),
            RunResult("a", "z2", "filtered", "fr-2", message="filter[0] was false"),
        ],
        done=[e.seq for e in claimed if e.id == "a"],
    )
    assert (await inbox.counts())["done"] == 1
    assert await inbox.run_state("a", "z1") == "failed"
    rows = await inbox.recent_runs(limit=10)
    assert len(rows) == 4
    failed = next(r for r in rows if (r.event_id, r.zap) == ("a", "z1"))
    assert (failed.state, failed.failing_step, failed.message) == ("failed", "sms", "boom")
    assert (failed.app, failed.trigger, failed.flow_run_id) == ("test", "thing_happened", "fr-1")
    assert [r.zap for r in await inbox.recent_runs(zap="z2")] == ["z2", "z2"]
    assert {r.event_id for r in await inbox.recent_runs(event_prefix="b")} == {"b"}
    assert await inbox.recent_runs(event_prefix="%") == []  # a prefix, not a pattern
    await inbox.abandon_runs([("b", "z1"), ("b", "z2")])
    assert await inbox.run_state("b", "z1") == "abandoned"
    await inbox.close()


# -- step checkpoints and dispatchers' heartbeats --------------------------------------------


async def test_step_checkpoints_are_read_by_another_dispatcher_and_purged_with_their_runs(
    backend: Backend,
) -> None:
    """What one dispatcher checkpointed, another sharing the inbox reads (to resume the run);
    JSON outputs come back as written; a step written again keeps its last outcome; purging a
    done event forgets its checkpoints too."""
    from flows.intake.db import StepOutcome

    first, second = await backend.open(), await backend.open()
    await first.put(event("e1"))
    output = {"status": 200, "body": {"id": "sms-1", "parts": [1, 2]}, "ok": True, "n": None}
    await first.save_steps(
        [
            StepOutcome("e1", "z", "sms", "completed", output),
            StepOutcome("e1", "z", "check", "skipped", None),
            StepOutcome("e1", "other", "sms", "completed", {"status": 500}),
        ]
    )
    await first.save_steps([StepOutcome("e1", "other", "sms", "completed", {"status": 201})])
    found = await second.load_steps([("e1", "z"), ("e1", "other"), ("e2", "z")])
    assert found == {
        ("e1", "z"): {"sms": ("completed", output), "check": ("skipped", None)},
        ("e1", "other"): {"sms": ("completed", {"status": 201})},
    }
    (claimed,) = await first.claim("w")
    assert await first.start_run("e1", "z")
    await first.finish_run("e1", "z", "completed")
    await first.done([claimed.seq])
    await asyncio.sleep(0.01)
    assert await first.purge(timedelta(0)) == 1
    assert await second.load_steps([("e1", "z"), ("e1", "other")]) == {}


async def test_a_heartbeat_keeps_a_workers_leases_and_silence_is_seen(backend: Backend) -> None:
    inbox = await backend.open()
    await inbox.put_many([event("a"), event("b")])
    a, b = await inbox.claim("host:1:5", lease=0.3)
    await inbox.heartbeat("host:1:5", "host", [a.seq], lease=60)
    await asyncio.sleep(0.4)
    # b's lease ran out; a's was extended by the heartbeat
    assert [e.id for e in await inbox.claim("host:2:9")] == ["b"]
    assert await inbox.silent_workers({"host:1:5", "never-seen:3:1"}, silent_for=0.2) == {
        "host:1:5"
    }
    assert await inbox.silent_workers({"host:1:5"}, silent_for=60) == set()
    await inbox.sign_off("host:1:5")
    assert await inbox.silent_workers({"host:1:5"}, silent_for=0.0) == set()
