"""The SQL app against real databases: a SQLite file, and PostgreSQL when
``ZAPFLOW_TEST_POSTGRES_URL`` is set (each test in a schema of its own, dropped afterwards).
What a user relies on when a row goes in or a query runs, names checked against the database,
values always bound, each failure turned into the error class that tells the engine what to do
next, and the URL's password kept out of every message."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from connectors import ActionContext, PollResult, registry
from connectors._errors import AuthError, PermanentError, RetryableError
from connectors.sql.connection import SqlConnection, async_url
from connectors.sql.database import dispose_engines
from flows.errors import ZapValidationError
from flows.loader import load_zap_text

PG_URL = os.environ.get("ZAPFLOW_TEST_POSTGRES_URL")
PG_SKIP = "PostgreSQL tests need ZAPFLOW_TEST_POSTGRES_URL"
PASSWORD = "pa55-" + "w0rd" * 5

metadata = sa.MetaData()
customers = sa.Table(
    "customers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("email", sa.String(200), nullable=False, unique=True),
    sa.Column("name", sa.Text),
    sa.Column("points", sa.Integer, nullable=False, server_default="0"),
    sa.Column("signed_up", sa.DateTime(timezone=True)),
    sa.Column("created_at", sa.DateTime, server_default=sa.text("CURRENT_TIMESTAMP")),
)
orders = sa.Table(
    "orders",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("customer", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("total", sa.Numeric(10, 2)),
    sa.Column("placed_at", sa.DateTime(timezone=True)),
)
sightings = sa.Table(  # no primary key
    "sightings",
    metadata,
    sa.Column("seen_at", sa.Integer, nullable=False),
    sa.Column("what", sa.Text, nullable=False),
)


# --------------------------------------------------------------------------- databases


@dataclass
class Database:
    """A database with the tables above, as the sql app sees it (``connection``) and as the
    test does (``engine``, to set up and look)."""

    kind: str
    connection: SqlConnection
    engine: AsyncEngine

    async def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            return [dict(r._mapping) for r in (await conn.execute(sa.text(sql), params)).all()]

    async def run(self, sql: str, **params: Any) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(sa.text(sql), params)


def pg_engine(schema: str | None = None) -> AsyncEngine:
    assert PG_URL is not None
    args = {"server_settings": {"search_path": schema}} if schema else {}
    return create_async_engine(async_url(PG_URL), connect_args=args)


@pytest.fixture(params=["sqlite", "postgresql"])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    schema = None
    if request.param == "sqlite":
        path = tmp_path / "shop.db"
        sqlite3.connect(path).close()
        # A sync-style URL, as a user writes it: mapped to aiosqlite.
        connection = SqlConnection(url=f"sqlite:///{path}")
        engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
    else:
        if not PG_URL:
            pytest.skip(PG_SKIP)
        schema = f"zapflow_sql_{uuid.uuid4().hex[:12]}"
        async with pg_engine().begin() as conn:
            await conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        connection = SqlConnection(url=PG_URL, schema_name=schema)
        engine = pg_engine(schema)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield Database(request.param, connection, engine)
    await dispose_engines()
    await engine.dispose()
    if schema is not None:
        cleanup = pg_engine()
        async with cleanup.begin() as conn:
            await conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        await cleanup.dispose()


def context(conn: SqlConnection | None, name: str = "shop") -> ActionContext:
    return ActionContext(
        zap_id="signups",
        step_id="save",
        run_id="r",
        event_id=uuid.uuid4().hex,
        connection=conn,
        connection_name=name,
    )


async def call(what: str, data: dict[str, Any], conn: SqlConnection, **kw: Any) -> Any:
    """Run ``sql.<what>`` as the engine does: validate the input, then run the action."""
    action = registry.action(f"sql.{what}")
    out = await action.run(action.input_model.model_validate(data), context(conn, **kw))
    assert isinstance(out, action.output_model)
    return out


def dumped(out: BaseModel) -> dict[str, Any]:
    return out.model_dump(mode="json")


CHAN = {"email": "chan@example.com", "name": "Chan Tai Man"}


# --------------------------------------------------------------------------- insert_row


async def test_insert_row_returns_the_stored_row_with_its_id_and_defaults(db: Database) -> None:
    out = await call("insert_row", {"table": "customers", "values": CHAN}, db.connection)
    row = out.row
    assert row["id"] == 1 and out.primary_key == {"id": 1}
    assert row["email"] == "chan@example.com" and row["points"] == 0
    assert isinstance(row["created_at"], str)  # filled in by the database, as ISO text
    second = await call(
        "insert_row", {"table": "customers", "values": {"email": "b@x"}}, db.connection
    )
    assert second.primary_key == {"id": 2}
    assert [r["email"] for r in await db.rows("SELECT email FROM customers ORDER BY id")] == [
        "chan@example.com",
        "b@x",
    ]


async def test_text_values_are_converted_to_the_columns_types(db: Database) -> None:
    values = {
        "customer": "chan",
        "status": "paid",
        "total": "19.90",
        "placed_at": "2026-11-25T09:30:00+08:00",
    }
    out = await call("insert_row", {"table": "orders", "values": values}, db.connection)
    assert out.row["total"] == "19.90"  # exact numbers come back as text
    stored = (await db.rows("SELECT total, placed_at FROM orders"))[0]
    assert float(stored["total"]) == 19.9
    if db.kind == "postgresql":  # SQLite keeps no time zone: the time is stored as UTC
        assert stored["placed_at"].isoformat() == "2026-11-25T01:30:00+00:00"
    points = await call(
        "insert_row",
        {"table": "customers", "values": {"email": "n@x", "points": "42"}},
        db.connection,
    )
    assert points.row["points"] == 42


async def test_a_value_that_does_not_fit_its_column_is_refused_naming_it(db: Database) -> None:
    data = {"table": "customers", "values": {"email": "n@x", "points": "lots"}}
    with pytest.raises(
        PermanentError, match=r"values\.points: the column holds INTEGER, and 'lots'"
    ):
        await call("insert_row", data, db.connection)


async def test_a_duplicate_is_a_permanent_error_with_the_databases_reason(db: Database) -> None:
    await call("insert_row", {"table": "customers", "values": CHAN}, db.connection)
    with pytest.raises(PermanentError, match="refused the row \\(a constraint\\)") as info:
        await call("insert_row", {"table": "customers", "values": CHAN}, db.connection)
    assert not isinstance(info.value, RetryableError)
    assert "unique" in str(info.value).lower()
    assert "INSERT INTO" not in str(info.value)  # the database's words, not SQLAlchemy's dump


async def test_unknown_tables_and_columns_list_what_there_is(db: Database) -> None:
    with pytest.raises(
        PermanentError, match="no table 'customer' \\(did you mean 'customers'\\?\\)"
    ) as info:
        await call("insert_row", {"table": "customer", "values": CHAN}, db.connection)
    assert "the database has: customers, orders, sightings" in str(info.value)
    data = {"table": "customers", "values": {"email": "a@x", "nmae": "A"}}
    with pytest.raises(PermanentError) as info:
        await call("insert_row", data, db.connection)
    assert "values: table 'customers' has no column 'nmae' (did you mean 'name'?)" in str(
        info.value
    )
    assert "its columns: id, email, name, points, signed_up, created_at" in str(info.value)


async def test_a_table_name_is_looked_up_never_run_as_sql(db: Database) -> None:
    table = "customers; DROP TABLE orders; --"
    with pytest.raises(PermanentError, match="there is no table"):
        await call("insert_row", {"table": table, "values": CHAN}, db.connection)
    assert await db.rows("SELECT * FROM orders") == []  # still there


# --------------------------------------------------------------------------- upsert_row


async def test_upsert_inserts_then_updates_the_row_with_the_same_key(db: Database) -> None:
    data = {"table": "customers", "values": {**CHAN, "points": 10}, "key_columns": ["email"]}
    first = await call("upsert_row", data, db.connection)
    assert first.inserted is True and first.row["points"] == 10
    data["values"] = {"email": "chan@example.com", "points": 25}
    second = await call("upsert_row", data, db.connection)
    assert second.inserted is False
    assert second.row["id"] == first.row["id"] and second.primary_key == first.primary_key
    assert second.row["points"] == 25 and second.row["name"] == "Chan Tai Man"  # name kept
    assert len(await db.rows("SELECT * FROM customers")) == 1


async def test_upsert_finds_the_row_by_primary_key_by_default(db: Database) -> None:
    await call("insert_row", {"table": "customers", "values": CHAN}, db.connection)
    data = {"table": "customers", "values": {"id": 1, "email": "new@x"}}
    out = await call("upsert_row", data, db.connection)
    assert out.inserted is False and out.row["email"] == "new@x"


async def test_an_upsert_of_only_key_columns_returns_the_row(db: Database) -> None:
    await call("insert_row", {"table": "customers", "values": CHAN}, db.connection)
    data = {"table": "customers", "values": {"email": CHAN["email"]}, "key_columns": ["email"]}
    out = await call("upsert_row", data, db.connection)
    assert out.inserted is False and out.row["name"] == "Chan Tai Man"


async def test_concurrent_upserts_of_one_key_insert_it_once(db: Database) -> None:
    async def upsert(points: int) -> Any:
        values = {"email": "race@x", "points": points}
        return await call(
            "upsert_row",
            {"table": "customers", "values": values, "key_columns": ["email"]},
            db.connection,
        )

    outs = await asyncio.gather(*(upsert(n) for n in range(10)))
    assert sum(out.inserted for out in outs) == 1
    assert len(await db.rows("SELECT * FROM customers")) == 1


async def test_upsert_key_problems_are_explained(db: Database) -> None:
    no_key = {"table": "customers", "values": {"name": "x"}, "key_columns": ["email"]}
    with pytest.raises(PermanentError, match=r"give the key column\(s\) \['email'\]"):
        await call("upsert_row", no_key, db.connection)
    not_unique = {
        "table": "customers",
        "values": {"email": "a", "name": "x"},
        "key_columns": ["name"],
    }
    with pytest.raises(PermanentError, match="(?i)conflict"):
        await call("upsert_row", not_unique, db.connection)
    no_pk = {"table": "sightings", "values": {"seen_at": 1, "what": "x"}}
    with pytest.raises(PermanentError, match="has no primary key; name the columns"):
        await call("upsert_row", no_pk, db.connection)


# --------------------------------------------------------------------------- run_query


async def seed(db: Database, count: int = 3) -> None:
    for n in range(1, count + 1):
        await db.run(
            "INSERT INTO customers (email, name, points) VALUES (:e, :n, :p)",
            e=f"c{n}@x",
            n=f"Customer {n}",
            p=n * 10,
        )


async def test_a_query_returns_rows_as_objects(db: Database) -> None:
    await seed(db)
    data = {
        "sql": "SELECT email, points FROM customers WHERE points >= :least ORDER BY id",
        "params": {"least": 20},
    }
    out = await call("run_query", data, db.connection)
    assert out.rows == [{"email": "c2@x", "points": 20}, {"email": "c3@x", "points": 30}]
    assert out.first_row == {"email": "c2@x", "points": 20}
    assert out.columns == ["email", "points"] and out.row_count == 2 and not out.truncated


async def test_max_rows_limits_what_comes_back_and_says_so(db: Database) -> None:
    await seed(db, 5)
    out = await call(
        "run_query", {"sql": "SELECT id FROM customers ORDER BY id", "max_rows": 2}, db.connection
    )
    assert [r["id"] for r in out.rows] == [1, 2] and out.truncated and out.row_count == 2
    empty = await call("run_query", {"sql": "SELECT id FROM customers WHERE id < 0"}, db.connection)
    assert empty.rows == [] and empty.first_row is None and not empty.truncated


async def test_parameters_are_bound_so_sql_in_a_value_is_only_text(db: Database) -> None:
    await seed(db)
    attack = "x' OR '1'='1"
    found = await call(
        "run_query",
        {"sql": "SELECT * FROM customers WHERE email = :email", "params": {"email": attack}},
        db.connection,
    )
    assert found.rows == []  # not every row
    drop = "'); DROP TABLE orders; --"
    write = {
        "sql": "INSERT INTO customers (email, name) VALUES (:email, :name)",
        "params": {"email": "evil@x", "name": drop},
        "read_only": False,
    }
    out = await call("run_query", write, db.connection)
    assert out.affected_rows == 1
    assert (await db.rows("SELECT name FROM customers WHERE email = 'evil@x'")) == [{"name": drop}]
    assert await db.rows("SELECT * FROM orders") == []  # the table is still there


async def test_a_query_is_read_only_unless_told_otherwise(db: Database) -> None:
    await seed(db, 1)
    change = {"sql": "UPDATE customers SET points = :p", "params": {"p": 99}}
    with pytest.raises(PermanentError, match="read_only is on: set it false to write"):
        await call("run_query", change, db.connection)
    assert (await db.rows("SELECT points FROM customers"))[0]["points"] == 10
    out = await call("run_query", {**change, "read_only": False}, db.connection)
    assert out.affected_rows == 1 and out.rows == [] and out.first_row is None
    assert (await db.rows("SELECT points FROM customers"))[0]["points"] == 99
    # The pooled connection is not left read-only, nor writable for the next read-only query.
    await call("insert_row", {"table": "customers", "values": {"email": "z@x"}}, db.connection)
    with pytest.raises(PermanentError, match="read_only is on"):
        await call("run_query", {"sql": "DELETE FROM customers"}, db.connection)


async def test_objects_and_lists_are_sent_as_json_text(db: Database) -> None:
    data = {
        "sql": "INSERT INTO customers (email, name) VALUES (:email, :name)",
        "params": {"email": "j@x", "name": {"first": "Tai Man", "tags": ["vip"]}},
        "read_only": False,
    }
    await call("run_query", data, db.connection)
    (row,) = await db.rows("SELECT name FROM customers")
    assert json.loads(row["name"]) == {"first": "Tai Man", "tags": ["vip"]}


async def test_bad_sql_is_a_permanent_error_with_the_databases_message(db: Database) -> None:
    with pytest.raises(PermanentError) as info:
        await call("run_query", {"sql": "SELEC * FROM customers"}, db.connection)
    assert "syntax error" in str(info.value) and not isinstance(info.value, RetryableError)
    with pytest.raises(PermanentError, match="nope"):
        await call("run_query", {"sql": "SELECT * FROM nope"}, db.connection)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"sql": "SELECT :a", "params": {"a": 1, "b": 2}},
            r"params \['b'\] do not appear in the sql \(it has :a\)",
        ),
        ({"sql": "SELECT :a, :b", "params": {"a": 1}}, r"the sql needs params \['b'\]"),
        ({"sql": "SELECT 1", "params": {"a-b": 1}}, "'a-b' is not a parameter name"),
        ({"sql": "SELECT 1", "max_rows": 0}, "max_rows"),
        ({"sql": ""}, "sql"),
    ],
)
def test_bad_query_inputs_are_refused_before_any_call(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        registry.action("sql.run_query").input_model.model_validate(data)


def test_a_literal_colon_is_not_a_parameter_and_a_cast_is_written_in_brackets() -> None:
    model = registry.action("sql.run_query").input_model
    model.model_validate({"sql": "SELECT '10:30', '\\:x', (:x)::text", "params": {"x": 1}})
    with pytest.raises(ValidationError, match=r"to cast one write \(:x\)::type, not :x::type"):
        model.model_validate({"sql": "SELECT :x::text", "params": {"x": 1}})


# --------------------------------------------------------------------------- failures


async def test_an_unreachable_database_is_retryable() -> None:
    conn = SqlConnection(url=f"postgresql://app:{PASSWORD}@127.0.0.1:1/shop")
    with pytest.raises(
        RetryableError, match="postgresql database shop on 127.0.0.1:1 is unavailable"
    ) as info:
        await call("run_query", {"sql": "SELECT 1"}, conn)
    assert "cannot connect" in str(info.value) and PASSWORD not in str(info.value)
    await dispose_engines()


async def test_a_locked_sqlite_database_is_retryable(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN IMMEDIATE")  # another program holds the write lock
    try:
        conn = SqlConnection(url=f"sqlite:///{path}?timeout=0.2")
        with pytest.raises(RetryableError, match="is unavailable or busy: database is locked"):
            await call("insert_row", {"table": "t", "values": {"x": 1}}, conn)
    finally:
        holder.close()
        await dispose_engines()


async def test_a_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    conn = SqlConnection(url=f"sqlite:///{tmp_path / 'typo.db'}")
    with pytest.raises(PermanentError, match="typo.db does not exist"):
        await call("run_query", {"sql": "SELECT 1"}, conn)
    assert not (tmp_path / "typo.db").exists()


def pg_url(**parts: Any) -> str:
    assert PG_URL is not None
    return sa.make_url(PG_URL).set(**parts).render_as_string(hide_password=False)


@pytest.mark.skipif(not PG_URL, reason=PG_SKIP)
async def test_refused_credentials_are_an_auth_error_that_says_how_to_fix_it() -> None:
    conn = SqlConnection(url=pg_url(username=f"nobody_{uuid.uuid4().hex[:6]}", password=PASSWORD))
    with pytest.raises(AuthError) as info:
        await call("run_query", {"sql": "SELECT 1"}, conn, name="warehouse")
    message = str(info.value)
    assert "refused the connection's credentials" in message and "does not exist" in message
    assert "`zapflow connections rekey sql warehouse`" in message and PASSWORD not in message
    await dispose_engines()


@pytest.mark.skipif(not PG_URL, reason=PG_SKIP)
async def test_the_password_never_shows_in_errors() -> None:
    conn = SqlConnection(url=pg_url(password=PASSWORD, database=f"nodb_{uuid.uuid4().hex[:6]}"))
    with pytest.raises(PermanentError) as info:
        await call("run_query", {"sql": "SELECT 1"}, conn)
    assert "does not exist" in str(info.value) and PASSWORD not in str(info.value)
    assert PASSWORD not in repr(conn) and PASSWORD not in str(conn.model_dump())
    await dispose_engines()


@pytest.mark.parametrize("db", ["postgresql"], indirect=True)  # SQLite: one writer, no deadlock
async def test_a_deadlock_is_retryable(db: Database) -> None:
    """Another session holds lock 1 and, once the step holds lock 2 and waits for 1, asks for
    2: PostgreSQL breaks the deadlock by failing the step (which waited first)."""
    async with db.engine.connect() as other:
        await other.exec_driver_sql("SET deadlock_timeout = '10s'")
        await other.execute(sa.text("SELECT pg_advisory_xact_lock(1)"))
        query = {"sql": "SELECT pg_advisory_xact_lock(2), pg_advisory_xact_lock(1)"}
        step = asyncio.create_task(call("run_query", query, db.connection))
        await asyncio.sleep(0.3)
        blocked = asyncio.create_task(other.execute(sa.text("SELECT pg_advisory_xact_lock(2)")))
        with pytest.raises(RetryableError, match="deadlock detected"):
            await step
        await blocked  # the step's transaction ended: the other session gets its lock
        await other.rollback()


# --------------------------------------------------------------------------- the connection


def test_sync_style_urls_are_mapped_to_asyncio_drivers() -> None:
    assert async_url("sqlite:///shop.db").drivername == "sqlite+aiosqlite"
    assert async_url("postgresql://u:p@h/db").drivername == "postgresql+asyncpg"
    assert async_url("postgres://u:p@h/db").drivername == "postgresql+asyncpg"
    assert async_url("postgresql+psycopg2://u:p@h/db").drivername == "postgresql+asyncpg"
    assert async_url("postgresql+asyncpg://u:p@h/db").drivername == "postgresql+asyncpg"


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"url": f"not a url {PASSWORD}"}, "url is not a SQLAlchemy database URL"),
        ({"url": "sqlite://"}, "a SQLite database must be a file"),
        ({"url": "sqlite:///:memory:"}, "a SQLite database must be a file"),
        ({"url": f"oracle://u:{PASSWORD}@h/db"}, "name an asyncio driver for oracle"),
        ({"url": "sqlite:///x.db", "schema_name": "s"}, "schema_name is for PostgreSQL"),
        ({"url": "postgresql://h/db", "schema_name": "a; drop"}, "not a plain schema name"),
    ],
)
def test_a_bad_connection_is_explained_without_quoting_the_url(
    given: dict[str, str], message: str
) -> None:
    with pytest.raises(ValidationError, match=message) as info:
        SqlConnection.model_validate(given)
    assert PASSWORD not in str(info.value)


async def test_the_connection_check_connects_and_counts_tables(db: Database) -> None:
    app = registry.app("sql")
    assert app.check is not None
    note = await app.check(db.connection, "shop")
    assert note.endswith("connected, 3 table(s)")


# --------------------------------------------------------------------------- zap files


def test_a_bad_sql_step_is_located_in_the_zap_file() -> None:
    text = (
        "zap: sql-zap\ntrigger:\n  app: builtin\n  event: catch_hook\nsteps:\n"
        "  - id: find\n    action: sql.run_query\n    connection: shop\n"
        "    input:\n      sql: SELECT * FROM customers WHERE email = :email\n"
        "      params: {mail: x}\n"
    )
    with pytest.raises(ZapValidationError) as info:
        load_zap_text(text, "z.yaml")
    (problem,) = info.value.problems
    assert problem.path.startswith("steps[0].input")
    assert "params ['mail'] do not appear in the sql (it has :email)" in problem.message


# --------------------------------------------------------------------------- new_row


async def poll(db: Database, cursor: dict[str, Any] | None, **options: Any) -> PollResult:
    trigger = registry.trigger("sql", "new_row")
    assert trigger.poll is not None and trigger.options_model is not None
    given = trigger.options_model.model_validate(
        {"table": "customers", "order_column": "id", **options}
    )
    return await trigger.poll(db.connection, given, cursor)


def numbers(found: PollResult, column: str = "id") -> list[Any]:
    return [row[column] for _, row in found.items]


async def test_new_row_starts_from_now_and_then_finds_each_new_row_once(db: Database) -> None:
    await seed(db, 3)
    first = await poll(db, None)
    assert first.cursor == {"last": 3, "ties": ["[3]"]}  # the rows there now are only noted
    await seed_more(db, 4, 5)
    second = await poll(db, first.cursor)
    assert numbers(second) == [4, 5] and second.items[0][1]["email"] == "c4@x"
    assert second.items[0][0] == "[4]"  # the primary key identifies a row for good
    third = await poll(db, second.cursor)
    assert third.items == [] and third.cursor == second.cursor


async def seed_more(db: Database, *ids: int) -> None:
    for n in ids:
        await db.run("INSERT INTO customers (id, email) VALUES (:n, :e)", n=n, e=f"c{n}@x")


async def test_a_table_empty_at_first_runs_the_zap_on_every_row_to_come(db: Database) -> None:
    first = await poll(db, None)
    assert first.items == [] and first.cursor == {"last": None, "ties": []}
    await seed(db, 2)
    assert numbers(await poll(db, first.cursor)) == [1, 2]


async def test_skip_existing_false_walks_through_the_history_limit_rows_at_a_time(
    db: Database,
) -> None:
    await seed(db, 5)
    cursor, seen = None, []
    for _ in range(4):
        found = await poll(db, cursor, skip_existing=False, limit=2)
        seen.append(numbers(found))
        cursor = found.cursor
    assert seen == [[1, 2], [3, 4], [5], []]


async def test_rows_sharing_a_time_are_each_found_once(db: Database) -> None:
    """Orders placed in the same second: the cursor keeps the ids seen at the latest time."""
    at = "2026-11-25T09:30:00+00:00"

    async def place(*ids: int, when: str = at) -> None:
        for n in ids:
            await db.run(
                "INSERT INTO orders (id, customer, status, placed_at) VALUES (:n, 'c', 'paid', :t)",
                n=n,
                t=datetime.fromisoformat(when),
            )

    options = {"table": "orders", "order_column": "placed_at", "skip_existing": False, "limit": 2}
    await place(1, 2, 3)
    first = await poll(db, None, **options)
    assert numbers(first) == [1, 2]
    second = await poll(db, first.cursor, **options)
    assert numbers(second) == [3] and second.cursor is not None
    assert sorted(second.cursor["ties"]) == ["[1]", "[2]", "[3]"]
    await place(4)
    await place(5, when="2026-11-25T09:31:00+00:00")
    third = await poll(db, second.cursor, **options)
    assert numbers(third) == [4, 5] and third.cursor is not None
    assert third.cursor["ties"] == ["[5]"]
    assert (await poll(db, third.cursor, **options)).items == []


async def test_where_picks_the_rows_that_start_the_zap(db: Database) -> None:
    options = {"table": "orders", "order_column": "id", "where": {"status": "paid"}}
    first = await poll(db, None, **options)
    for n, status in enumerate(["paid", "cancelled", "paid"], start=1):
        await db.run(
            "INSERT INTO orders (customer, status, total) VALUES ('c', :s, :t)", s=status, t=n
        )
    found = await poll(db, first.cursor, **options)
    assert numbers(found) == [1, 3] and found.items[0][1]["total"] == "1.00"


async def test_rows_of_a_table_without_a_primary_key_are_told_apart_by_their_values(
    db: Database,
) -> None:
    options = {"table": "sightings", "order_column": "seen_at", "skip_existing": False}
    await db.run("INSERT INTO sightings VALUES (1, 'heron'), (1, 'egret')")
    found = await poll(db, None, **options)
    assert sorted(row["what"] for _, row in found.items) == ["egret", "heron"]
    assert found.items[0][0] == json.dumps(found.items[0][1], sort_keys=True)
    await db.run("INSERT INTO sightings VALUES (1, 'kite')")
    assert [row["what"] for _, row in (await poll(db, found.cursor, **options)).items] == ["kite"]


async def test_unknown_names_in_trigger_options_list_what_there_is(db: Database) -> None:
    with pytest.raises(PermanentError, match="order_column: table 'customers' has no column 'idd'"):
        await poll(db, None, order_column="idd")
    with pytest.raises(PermanentError, match="where: table 'customers' has no column 'state'"):
        await poll(db, None, where={"state": "x"})
    with pytest.raises(PermanentError, match="there is no table 'clients'"):
        await poll(db, None, table="clients")


async def test_the_trigger_needs_a_connection() -> None:
    trigger = registry.trigger("sql", "new_row")
    assert trigger.poll is not None and trigger.options_model is not None
    options = trigger.options_model.model_validate({"table": "t", "order_column": "id"})
    with pytest.raises(PermanentError, match="needs a connection"):
        await trigger.poll(None, options, None)


async def test_serve_polls_a_table_and_stores_each_new_row_as_one_event(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As `zapflow serve` runs it: the connection from the environment, the cursor in the
    inbox, one event per new row."""
    from flows import connections
    from flows.intake.db import events, poll_state
    from flows.intake.inbox import Inbox
    from flows.intake.pollers import Pollers

    monkeypatch.setenv("ZAPFLOW_SQL_SHOP_URL", db.connection.url.get_secret_value())
    if db.connection.schema_name:
        monkeypatch.setenv("ZAPFLOW_SQL_SHOP_SCHEMA_NAME", db.connection.schema_name)
    connections.forget("sql", "shop")
    await seed(db, 2)
    zap = load_zap_text(
        "zap: new-customers\n"
        "trigger:\n  app: sql\n  event: new_row\n  connection: shop\n"
        "  options: {table: customers, order_column: id, interval: 50ms}\n"
        "steps:\n  - id: n\n    action: builtin.lookup\n    input: {key: a, table: {a: 1}}\n"
    )
    inbox = await Inbox.open(f"sqlite+aiosqlite:///{tmp_path / 'inbox.db'}")
    pollers = Pollers(inbox, min_interval=0.01, report=lambda _: None)
    try:
        pollers.update([zap])

        async def stored() -> list[Any]:
            async with inbox.engine.connect() as conn:
                found = await conn.execute(sa.select(events).order_by(events.c.seq))
                return [row.payload for row in found.all()]

        # The first poll notes customers 1 and 2 (its cursor is then in the inbox): wait for
        # it, not a fixed time — on a loaded machine (CI) it may take longer than 0.3 s.
        deadline = asyncio.get_running_loop().time() + 20
        while True:
            async with inbox.engine.connect() as conn:
                polled = (await conn.execute(sa.select(poll_state.c.cursor))).first()
            if polled is not None and polled.cursor is not None:
                break
            assert asyncio.get_running_loop().time() < deadline, "the first poll never ran"
            await asyncio.sleep(0.05)
        await seed_more(db, 3, 4)
        deadline = asyncio.get_running_loop().time() + 10
        while len(await stored()) < 2 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # later polls add nothing
        assert [p["id"] for p in await stored()] == [3, 4]
    finally:
        await pollers.stop()
        await inbox.close()
