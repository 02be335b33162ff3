"""The storage app on zapflow's own database: a SQLite inbox file, and PostgreSQL when
``ZAPFLOW_TEST_POSTGRES_URL`` is set (each test on a database of its own, dropped afterwards).
Values a zap keeps between runs, counters and lists that stay exact when many steps change
them at once (in one process or several), namespaces that keep zaps apart, and the limits."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import create_async_engine

from connectors import ActionContext, registry
from connectors._errors import PermanentError
from connectors._storage import MAX_KEYS
from flows.intake.db import storage
from flows.intake.storage import close_stores, current_store
from flows.loader import load_zap_text

PG_URL = os.environ.get("ZAPFLOW_TEST_POSTGRES_URL")
ROOT = Path(__file__).parent.parent


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    """zapflow's database (ZAPFLOW_INBOX_URL) for one test; its URL."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'inbox.db'}"
        monkeypatch.setenv("ZAPFLOW_INBOX_URL", url)
        yield url
        await close_stores()
        return
    if not PG_URL:
        pytest.skip("PostgreSQL tests need ZAPFLOW_TEST_POSTGRES_URL")
    name = f"zapflow_storage_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(sa.make_url(PG_URL), isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    monkeypatch.setenv("ZAPFLOW_INBOX_URL", url)
    yield url
    await close_stores()
    async with admin.connect() as conn:
        await conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
    await admin.dispose()


def context(zap: str = "orders") -> ActionContext:
    return ActionContext(
        zap_id=zap, step_id="count", run_id="r", event_id=uuid.uuid4().hex, storage=current_store
    )


async def call(what: str, data: dict[str, Any], zap: str = "orders") -> Any:
    """Run ``storage.<what>`` as the engine does: validate the input, then run the action."""
    action = registry.action(f"storage.{what}")
    out = await action.run(action.input_model.model_validate(data), context(zap))
    assert isinstance(out, action.output_model)
    return out


# --------------------------------------------------------------------------- a zap's values


async def test_a_zap_keeps_values_between_runs(database: str) -> None:
    stored = await call("set_value", {"key": "last_order", "value": {"id": 1001, "tags": ["vip"]}})
    assert stored.value == {"id": 1001, "tags": ["vip"]}
    found = await call("get_value", {"key": "last_order"})
    assert found.found and found.value == {"id": 1001, "tags": ["vip"]}
    await call("set_value", {"key": "last_order", "value": "replaced"})
    assert (await call("get_value", {"key": "last_order"})).value == "replaced"
    await call("set_value", {"key": "nothing", "value": None})
    kept = await call("get_value", {"key": "nothing", "default": "x"})
    assert kept.found and kept.value is None  # null is a value, not "missing"
    everything = await call("get_all", {})
    assert everything.values == {"last_order": "replaced", "nothing": None}
    assert everything.count == 2


async def test_a_missing_key_gives_the_default(database: str) -> None:
    found = await call("get_value", {"key": "never", "default": 0})
    assert not found.found and found.value == 0
    assert (await call("get_value", {"key": "never"})).value is None


async def test_deleting_a_key_says_what_it_held(database: str) -> None:
    await call("set_value", {"key": "k", "value": [1, 2]})
    gone = await call("delete_value", {"key": "k"})
    assert gone.deleted and gone.value == [1, 2]
    assert not (await call("get_value", {"key": "k"})).found
    again = await call("delete_value", {"key": "k"})
    assert not again.deleted and again.value is None


async def test_a_yaml_date_is_kept_as_iso_text(database: str) -> None:
    out = await call("set_value", {"key": "since", "value": {"day": date(2026, 11, 25)}})
    assert out.value == {"day": "2026-11-25"}
    assert (await call("get_value", {"key": "since"})).value == {"day": "2026-11-25"}


# --------------------------------------------------------------------------- counters and lists


async def test_increment_starts_at_zero_and_adds(database: str) -> None:
    first = await call("increment", {"key": "orders"})
    assert (first.previous, first.value) == (0, 1)
    more = await call("increment", {"key": "orders", "by": 10})
    assert more.value == 11
    assert (await call("increment", {"key": "orders", "by": -2.5})).value == 8.5
    assert (await call("get_value", {"key": "orders"})).value == 8.5


async def test_concurrent_increments_from_many_steps_count_exactly(database: str) -> None:
    outs = await asyncio.gather(*(call("increment", {"key": "hits"}) for _ in range(60)))
    assert (await call("get_value", {"key": "hits"})).value == 60
    assert sorted(out.value for out in outs) == list(range(1, 61))  # each saw its own count


def increments_in_another_process(url: str, times: int) -> subprocess.Popen[str]:
    script = textwrap.dedent(
        f"""
        import asyncio
        from connectors import ActionContext, registry
        from flows.intake.storage import current_store

        async def main():
            action = registry.action("storage.increment")
            ctx = ActionContext(
                zap_id="orders", step_id="s", run_id="r", event_id="e", storage=current_store
            )
            data = action.input_model.model_validate({{"key": "hits"}})
            await asyncio.gather(*(action.run(data, ctx) for _ in range({times})))

        asyncio.run(main())
        """
    )
    env = {**os.environ, "ZAPFLOW_INBOX_URL": url}
    return subprocess.Popen([sys.executable, "-c", script], env=env, cwd=ROOT, text=True)


async def test_increments_from_several_processes_at_once_count_exactly(database: str) -> None:
    await call("increment", {"key": "hits", "by": 0})  # the schema exists before they start
    others = [increments_in_another_process(database, 40) for _ in range(2)]
    await asyncio.gather(*(call("increment", {"key": "hits"}) for _ in range(40)))
    for proc in others:
        assert await asyncio.to_thread(proc.wait, 120) == 0
    assert (await call("get_value", {"key": "hits"})).value == 120


async def test_values_survive_a_new_process(database: str) -> None:
    await call("set_value", {"key": "greeting", "value": {"text": "早晨"}})
    script = textwrap.dedent(
        """
        import asyncio, json
        from connectors import ActionContext, registry
        from flows.intake.storage import current_store

        async def main():
            ctx = ActionContext(
                zap_id="orders", step_id="s", run_id="r", event_id="e", storage=current_store
            )
            get = registry.action("storage.get_value")
            found = await get.run(get.input_model.model_validate({"key": "greeting"}), ctx)
            print(json.dumps(found.value, ensure_ascii=False))
            put = registry.action("storage.set_value")
            await put.run(put.input_model.model_validate({"key": "reply", "value": 42}), ctx)

        asyncio.run(main())
        """
    )
    env = {**os.environ, "ZAPFLOW_INBOX_URL": database}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", script],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '{"text": "早晨"}'
    assert (await call("get_value", {"key": "reply"})).value == 42


async def test_increment_refuses_a_key_that_holds_no_number(database: str) -> None:
    await call("set_value", {"key": "name", "value": "Chan"})
    with pytest.raises(PermanentError, match="key 'name' holds text, not a number"):
        await call("increment", {"key": "name"})
    await call("set_value", {"key": "flag", "value": True})
    with pytest.raises(PermanentError, match="holds true/false, not a number"):
        await call("increment", {"key": "flag"})


async def test_append_builds_a_list_and_keeps_the_newest_max_length(database: str) -> None:
    for n in range(1, 4):
        out = await call("append_to_list", {"key": "recent", "value": n})
    assert out.value == [1, 2, 3] and out.length == 3
    out = await call("append_to_list", {"key": "recent", "value": 4, "max_length": 2})
    assert out.value == [3, 4]
    await call("set_value", {"key": "count", "value": 3})
    with pytest.raises(PermanentError, match="key 'count' holds a number, not a list"):
        await call("append_to_list", {"key": "count", "value": 1})


async def test_concurrent_appends_keep_every_value_once(database: str) -> None:
    await asyncio.gather(*(call("append_to_list", {"key": "ids", "value": n}) for n in range(40)))
    found = await call("get_value", {"key": "ids"})
    assert sorted(found.value) == list(range(40))


async def test_concurrent_pops_never_take_the_same_entry(database: str) -> None:
    await call("set_value", {"key": "queue", "value": list(range(20))})
    outs = await asyncio.gather(
        *(call("pop_from_list", {"key": "queue", "default": "empty"}) for _ in range(30))
    )
    taken = [out.value for out in outs if out.found]
    assert sorted(taken) == list(range(20))
    assert [out.value for out in outs if not out.found] == ["empty"] * 10
    assert (await call("get_value", {"key": "queue"})).value == []


async def test_pop_takes_the_last_or_the_first_entry(database: str) -> None:
    await call("set_value", {"key": "q", "value": ["a", "b", "c"]})
    last = await call("pop_from_list", {"key": "q"})
    first = await call("pop_from_list", {"key": "q", "end": "first"})
    assert (last.value, first.value, first.remaining) == ("c", "a", 1)
    missing = await call("pop_from_list", {"key": "nothing-here"})
    assert not missing.found and missing.value is None and missing.remaining == 0


# --------------------------------------------------------------------------- namespaces


async def test_each_zap_has_its_own_storage_unless_they_share_a_namespace(database: str) -> None:
    await call("set_value", {"key": "k", "value": "orders'"}, zap="orders")
    await call("set_value", {"key": "k", "value": "refunds'"}, zap="refunds")
    assert (await call("get_value", {"key": "k"}, zap="orders")).value == "orders'"
    assert (await call("get_value", {"key": "k"}, zap="refunds")).value == "refunds'"

    shared = {"key": "k", "namespace": "shop"}
    await call("increment", shared, zap="orders")
    await call("increment", shared, zap="refunds")
    assert (await call("get_value", shared, zap="reports")).value == 2
    # A zap called like a namespace does not see it.
    assert not (await call("get_value", {"key": "k"}, zap="shop")).found
    assert (await call("get_all", {"namespace": "shop"}, zap="x")).values == {"k": 2}


# --------------------------------------------------------------------------- limits


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"key": ""}, "key"),
        ({"key": "k" * 256}, "at most 255 characters"),
        ({"key": "k", "namespace": "my shop"}, "a namespace is 1 to 100 letters"),
        ({"key": "k", "namespace": "n" * 101}, "a namespace is 1 to 100 letters"),
        ({"key": "k", "by": "lots"}, "by"),
        ({"key": "k", "by": float("nan")}, "by"),
        ({"key": "k", "other": 1}, "other"),
    ],
)
def test_bad_inputs_are_refused_before_any_call(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        registry.action("storage.increment").input_model.model_validate(data)


async def test_a_value_over_64_kb_is_refused(database: str) -> None:
    await call("set_value", {"key": "big", "value": "x" * 60_000})
    with pytest.raises(PermanentError, match="at most 64 KB as JSON; this one would be 70,002"):
        await call("set_value", {"key": "big", "value": "x" * 70_000})
    with pytest.raises(PermanentError, match="at most 64 KB"):
        await call("append_to_list", {"key": "l", "value": "y" * 70_000})
    assert len((await call("get_value", {"key": "big"})).value) == 60_000  # unchanged


async def test_a_full_namespace_refuses_new_keys_but_changes_existing_ones(database: str) -> None:
    await call("set_value", {"key": "k0", "value": 0})
    store = await current_store()
    now = datetime.now(UTC)
    rows = [
        {"namespace": "zap:orders", "key": f"k{n}", "value": n, "updated_at": now}
        for n in range(1, MAX_KEYS)
    ]
    async with store.engine.begin() as conn:  # 9,999 more keys, written at once
        await conn.execute(storage.insert(), rows)
    with pytest.raises(PermanentError, match="holds 10,000 keys, the most it may"):
        await call("set_value", {"key": "one-more", "value": 1})
    assert (await call("increment", {"key": "k0"})).value == 1  # an existing key still works
    await call("delete_value", {"key": "k1"})
    await call("set_value", {"key": "one-more", "value": 1})


# --------------------------------------------------------------------------- zap runs


@pytest.mark.usefixtures("prefect_api")
def test_a_zap_run_counts_in_its_own_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.compiler import run_with_history
    from flows.events import Event

    monkeypatch.setenv("ZAPFLOW_INBOX_URL", f"sqlite+aiosqlite:///{tmp_path / 'inbox.db'}")
    zap = load_zap_text(
        "zap: order-counter\n"
        "trigger:\n  app: builtin\n  event: catch_hook\n"
        "steps:\n"
        "  - id: count\n    action: storage.increment\n    input: {key: orders}\n"
        "  - id: remember\n    action: storage.append_to_list\n"
        "    input: {key: recent, value: '{{ trigger.id }}', max_length: 2}\n"
    )

    async def twice() -> list[Any]:
        states = []
        for order in ("o-1", "o-2", "o-3"):
            event = Event(app="builtin", trigger="catch_hook", payload={"id": order})
            states.append(await run_with_history(zap, event))
        store = await current_store()
        found = [await store.get("zap:order-counter", key) for key in ("orders", "recent")]
        await close_stores()
        return [states, found]

    states, found = asyncio.run(twice())
    assert all(state.is_completed() for state in states), [s.message for s in states]
    assert found == [3, ["o-2", "o-3"]]
