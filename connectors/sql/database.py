"""What every SQL action and trigger needs: an engine per connection, tables looked up in the
database itself, values converted to the column's type, rows made JSON, and each failure turned
into the error class that tells the engine what to do next.

Table and column names are only ever matched against what the database reflects, never written
into SQL; values are bound parameters. Messages name the database without its password and
carry the database's own words with any secret masked.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import weakref
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import TypeAdapter, ValidationError
from pydantic_core import to_jsonable_python
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from connectors._errors import AuthError, ConnectorError, PermanentError, RetryableError
from connectors.registry import suggest
from connectors.sql.connection import SqlConnection, described

CONNECT_TIMEOUT = 15.0
MESSAGE_LIMIT = 500
# SQLSTATE classes worth retrying: connection (08), transaction rollback incl. deadlock and
# serialization failure (40), resources (53), object in use / lock not available (55),
# operator intervention incl. shutdown (57), system I/O (58).
RETRYABLE_SQLSTATE = ("08", "40", "53", "55", "57", "58")
RETRYABLE_SQLITE = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_PROTOCOL")
_CLASS_PREFIX = re.compile(r"^<class '[\w.]+'>:\s*")

_engines: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str], AsyncEngine]]
_engines = weakref.WeakKeyDictionary()


# --------------------------------------------------------------------------- engines


def engine_for(connection: SqlConnection) -> AsyncEngine:
    """The connection's engine in this process and event loop (pooled connections belong to
    the loop that opened them)."""
    url = connection.database_url
    if url.get_backend_name() == "sqlite" and not Path(str(url.database)).expanduser().exists():
        raise PermanentError(f"{described(url)} does not exist (the sql app creates no database)")
    engines = _engines.setdefault(asyncio.get_running_loop(), {})
    key = (connection.url.get_secret_value(), connection.schema_name)
    if key not in engines:
        engines[key] = _new_engine(url, connection.schema_name)
    return engines[key]


async def dispose_engines() -> None:
    """Close the pooled connections of this event loop's engines (tests, shutdown)."""
    for engine in _engines.pop(asyncio.get_running_loop(), {}).values():
        await engine.dispose()


def _new_engine(url: sa.URL, schema: str) -> AsyncEngine:
    try:
        if url.get_backend_name() == "postgresql":
            args: dict[str, Any] = {"timeout": CONNECT_TIMEOUT}
            if schema:
                args["server_settings"] = {"search_path": schema}
            return create_async_engine(url, pool_pre_ping=True, connect_args=args)
        engine = create_async_engine(url, pool_pre_ping=True)
    except (sa.exc.NoSuchModuleError, ImportError) as exc:
        raise PermanentError(
            f"{described(url)}: no asyncio driver {url.drivername!r} is installed ({exc}); "
            "SQLite and PostgreSQL work out of the box"
        ) from None
    if url.get_backend_name() == "sqlite":
        _own_transactions(engine)
    return engine


def _own_transactions(engine: AsyncEngine) -> None:
    """SQLite: real transactions. The driver would begin one only before a write, so a read
    and the write after it would not be atomic; writers take the lock up front (and wait for
    it under the busy timeout) rather than fail when upgrading."""

    @sa.event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        options = conn.get_execution_options()
        # Set on every transaction: a pooled connection must not keep the last one's setting.
        conn.exec_driver_sql(f"PRAGMA query_only={int(options.get('sql_read_only', False))}")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get("sql_write") else "BEGIN")


@asynccontextmanager
async def transaction(
    connection: SqlConnection, name: str | None, *, write: bool, read_only: bool = False
) -> AsyncIterator[AsyncConnection]:
    """A transaction on the connection's database, committed when the block ends (rolled back
    when ``read_only``, in which the database refuses writes); any failure comes out as a
    ``ConnectorError`` saying whether retrying can help."""
    engine = engine_for(connection)
    options: dict[str, Any] = {"sql_write": write, "sql_read_only": read_only}
    if read_only and engine.dialect.name == "postgresql":
        options["postgresql_readonly"] = True
    try:
        async with engine.execution_options(**options).connect() as conn, conn.begin() as tx:
            yield conn
            if read_only:
                await tx.rollback()
    except ConnectorError:
        raise
    except Exception as exc:
        raise failure(exc, connection, name) from None


# --------------------------------------------------------------------------- tables


async def table_named(conn: AsyncConnection, name: str) -> sa.Table:
    """The table (or view) as the database describes it, or an error listing those there are."""

    def reflect(sync: sa.Connection) -> sa.Table:
        inspector = sa.inspect(sync)
        if not inspector.has_table(name):
            there = sorted([*inspector.get_table_names(), *inspector.get_view_names()])
            raise PermanentError(
                f"there is no table {name!r}{suggest(name, there)}; the database has: "
                f"{_listed(there)}"
            )
        return sa.Table(name, sa.MetaData(), autoload_with=sync)

    return await conn.run_sync(reflect)


def check_columns(table: sa.Table, names: Iterable[str], field: str) -> None:
    """Every name is a column of the table, or a PermanentError naming the field and the
    columns there are."""
    there = [c.name for c in table.columns]
    for name in names:
        if name not in table.c:
            raise PermanentError(
                f"{field}: table {table.name!r} has no column {name!r}{suggest(name, there)}; "
                f"its columns: {_listed(there)}"
            )


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:50]) or "(nothing)"
    return shown + (f" … ({len(names)} in all)" if len(names) > 50 else "")


def primary_key(table: sa.Table) -> list[str]:
    return [c.name for c in table.primary_key.columns]


# --------------------------------------------------------------------------- values


def column_values(table: sa.Table, values: Mapping[str, Any], field: str) -> dict[str, Any]:
    """``values`` checked against the table's columns and converted to their types (a zap's
    values are often text: "42" for an integer column, an ISO time for a timestamp)."""
    check_columns(table, values, field)
    return {name: column_value(table.c[name], value, field) for name, value in values.items()}


def column_value(column: sa.Column[Any], value: Any, field: str) -> Any:
    if value is None or isinstance(column.type, sa.JSON | sa.ARRAY):
        return value
    try:
        kind = column.type.python_type
    except NotImplementedError:  # a type SQLAlchemy cannot map: the driver decides
        return value
    if kind is str and isinstance(value, bool | int | float | dict | list):
        return json.dumps(value)
    try:
        converted = _adapter(kind).validate_python(value)
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"]
        raise PermanentError(
            f"{field}.{column.name}: the column holds {column.type}, and {value!r} is not one "
            f"({reason})"
        ) from None
    aware = isinstance(converted, datetime) and converted.tzinfo is not None
    if aware and not getattr(column.type, "timezone", True):
        # A column without a time zone holds UTC times: drivers refuse an aware datetime there.
        converted = converted.astimezone(UTC).replace(tzinfo=None)
    return converted


_adapters: dict[type, TypeAdapter[Any]] = {}


def _adapter(kind: type) -> TypeAdapter[Any]:
    if kind not in _adapters:
        _adapters[kind] = TypeAdapter(kind)
    return _adapters[kind]


def parameter_value(value: Any) -> Any:
    """A query parameter as the driver can bind it: objects and lists as JSON text."""
    return json.dumps(value) if isinstance(value, dict | list) else value


def row_json(row: sa.Row[Any] | Mapping[str, Any]) -> dict[str, Any]:
    """A row as JSON: times as ISO text, exact numbers (NUMERIC) as text, bytes as base64."""
    mapping = row._mapping if isinstance(row, sa.Row) else row
    return {
        str(name): to_jsonable_python(value, bytes_mode="base64", serialize_unknown=True)
        for name, value in mapping.items()
    }


# --------------------------------------------------------------------------- failures


def failure(exc: BaseException, connection: SqlConnection, name: str | None) -> ConnectorError:
    """The engine's error for a failed database call, its message masked."""
    where = described(connection.database_url)
    message = _masked(_database_words(exc), connection)
    state = _sqlstate(exc)
    if state.startswith("28"):
        fix = f"; re-enter it with `zapflow connections rekey sql {name}`" if name else ""
        return AuthError(f"{where} refused the connection's credentials: {message}{fix}")
    if _retryable(exc, state):
        return RetryableError(f"{where} is unavailable or busy: {message}")
    if state == "25006" or _sqlite_name(exc) == "SQLITE_READONLY":
        return PermanentError(f"{where}: {message} (read_only is on: set it false to write)")
    if isinstance(exc, sa.exc.IntegrityError):
        return PermanentError(f"{where} refused the row (a constraint): {message}")
    return PermanentError(f"{where}: {message}")


def _retryable(exc: BaseException, state: str) -> bool:
    if state:
        return state.startswith(RETRYABLE_SQLSTATE)
    if _sqlite_name(exc).startswith(RETRYABLE_SQLITE):
        return True
    if isinstance(exc, sa.exc.DBAPIError):
        return exc.connection_invalidated or isinstance(exc, sa.exc.InterfaceError)
    return isinstance(exc, OSError | TimeoutError)


def _causes(exc: BaseException) -> Iterable[BaseException]:
    """The error, the driver's error it wraps, and what that was raised from."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 5:
        seen.append(current)
        current = getattr(current, "orig", None) or current.__cause__
    return seen


def _sqlstate(exc: BaseException) -> str:
    for cause in _causes(exc):
        state = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
        if isinstance(state, str) and state:
            return state
    return ""


def _sqlite_name(exc: BaseException) -> str:
    for cause in _causes(exc):
        if isinstance(cause, sqlite3.Error) and cause.sqlite_errorname:
            return cause.sqlite_errorname
    return ""


def _database_words(exc: BaseException) -> str:
    """What the database (or driver) said, without SQLAlchemy's SQL and parameter dump."""
    inner = getattr(exc, "orig", None) or exc
    text = _CLASS_PREFIX.sub("", str(inner)).strip() or type(inner).__name__
    if isinstance(inner, OSError) and not isinstance(inner, sqlite3.Error):
        text = f"cannot connect ({text})"
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_LIMIT else text[:MESSAGE_LIMIT] + "…"


def _masked(text: str, connection: SqlConnection) -> str:
    for secret in sorted(connection.secrets(), key=len, reverse=True):
        text = text.replace(secret, "********")
    return text
