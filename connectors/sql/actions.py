"""The SQL app's actions: insert a row, upsert a row, run a query with bound parameters."""

from __future__ import annotations

import re
from typing import Annotated, Any, Self

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from connectors._contract import ActionContext
from connectors._errors import PermanentError
from connectors.sql._app import app
from connectors.sql.connection import SqlConnection, described
from connectors.sql.database import (
    check_columns,
    column_values,
    parameter_value,
    primary_key,
    row_json,
    table_named,
    transaction,
)

MAX_ROWS = 10_000
MAX_SQL = 100_000
PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A label no real column has: PostgreSQL says in it whether the upsert inserted.
_INSERTED = "zapflow_upsert_inserted"

TableName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        description="The table, named as in the database (checked against it)",
        examples=["orders"],
    ),
]
Values = Annotated[
    dict[str, Any],
    Field(
        description='Column → value; text is converted to the column\'s type ("42" for an '
        "integer, an ISO time for a timestamp)",
        examples=[{"email": "chan@example.com", "name": "Chan Tai Man"}],
    ),
]


class InsertRowInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    table: TableName
    values: Values


class InsertedRow(BaseModel):
    row: dict[str, Any] = Field(
        description="The row as stored, with what the database filled in (ids, defaults)"
    )
    primary_key: dict[str, Any] = Field(
        description="The row's primary key columns and values; empty when the table has none"
    )


class UpsertRowInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    table: TableName
    values: Values
    key_columns: list[str] = Field(
        default_factory=list,
        description="The columns that identify the row, covered by the primary key or a "
        "unique constraint; their values must be given. Default: the table's primary key",
        examples=[["email"]],
    )


class UpsertedRow(InsertedRow):
    inserted: bool = Field(
        description="true: a new row; false: the row with these keys existed and was updated"
    )


class RunQueryInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sql: str = Field(
        min_length=1,
        max_length=MAX_SQL,
        description="One SQL statement; values go in as named parameters written :name "
        "(write \\: for a literal colon), never into the text",
        examples=["SELECT id, email FROM customers WHERE email = :email"],
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="The values of the statement's :name parameters, always sent bound; "
        "objects and lists are sent as JSON text",
        examples=[{"email": "chan@example.com"}],
    )
    max_rows: int = Field(
        100, ge=1, le=MAX_ROWS, description=f"Most rows returned (up to {MAX_ROWS:,})"
    )
    read_only: bool = Field(
        True,
        description="Run in a read-only transaction that is rolled back: a statement that "
        "writes fails. false: the statement may change data, and is committed",
    )

    @field_validator("params")
    @classmethod
    def _param_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not PARAM_NAME.match(name):
                raise ValueError(f"{name!r} is not a parameter name (letters, digits and _)")
        return value

    @model_validator(mode="after")
    def _params_match_the_sql(self) -> Self:
        wanted = set(sa.text(self.sql).compile().params)
        unused = sorted(set(self.params) - wanted)
        missing = sorted(wanted - set(self.params))
        written = ", ".join(f":{name}" for name in sorted(wanted)) or "none"
        if unused:
            cast = next((name for name in unused if f":{name}::" in self.sql), None)
            hint = f"; to cast one write (:{cast})::type, not :{cast}::type" if cast else ""
            raise ValueError(f"params {unused} do not appear in the sql (it has {written}){hint}")
        if missing:
            raise ValueError(f"the sql needs params {missing}: give them in params")
        return self


class QueryResult(BaseModel):
    rows: list[dict[str, Any]] = Field(description="The rows returned, up to max_rows")
    first_row: dict[str, Any] | None = Field(
        description="The first row (null when none), for a step that looks one thing up"
    )
    columns: list[str] = Field(description="The names of the columns returned")
    row_count: int = Field(description="How many rows are in rows")
    truncated: bool = Field(description="Whether the query returned more than max_rows rows")
    affected_rows: int | None = Field(
        description="Rows an INSERT, UPDATE or DELETE changed; null when the database does not say"
    )


def _connection(ctx: ActionContext) -> SqlConnection:
    if not isinstance(ctx.connection, SqlConnection):
        raise PermanentError("the sql app needs a connection: the step's `connection:`")
    return ctx.connection


def _keys_of(row: dict[str, Any], table: sa.Table) -> dict[str, Any]:
    return {name: row.get(name) for name in primary_key(table)}


@app.action("insert_row", title="Insert a row")
async def insert_row(input: InsertRowInput, ctx: ActionContext) -> InsertedRow:
    """Inserts one row into a table and returns it as stored, with the id and defaults the
    database filled in. A row that breaks a constraint (a duplicate key, a missing required
    column) fails the step without retrying, with the database's reason."""
    connection = _connection(ctx)
    async with transaction(connection, ctx.connection_name, write=True) as db:
        table = await table_named(db, input.table)
        stmt = table.insert().values(column_values(table, input.values, "values"))
        if db.dialect.insert_returning:
            row = row_json((await db.execute(stmt.returning(*table.c))).one())
        else:
            done = await db.execute(stmt)
            keys = dict(zip(primary_key(table), done.inserted_primary_key or (), strict=False))
            row = row_json({**input.values, **keys})
    return InsertedRow(row=row, primary_key=_keys_of(row, table))


@app.action("upsert_row", title="Insert or update a row")
async def upsert_row(input: UpsertRowInput, ctx: ActionContext) -> UpsertedRow:
    """Inserts a row, or updates the row with the same key columns if there is one, in one
    statement (`INSERT … ON CONFLICT … DO UPDATE`, SQLite and PostgreSQL). Columns not in
    `values` keep what they had. Says whether the row was inserted."""
    connection = _connection(ctx)
    async with transaction(connection, ctx.connection_name, write=True) as db:
        table = await table_named(db, input.table)
        values = column_values(table, input.values, "values")
        keys = _key_columns(table, input.key_columns, values)
        row, inserted = await _upsert(db, table, values, keys)
    return UpsertedRow(row=row, primary_key=_keys_of(row, table), inserted=inserted)


def _key_columns(table: sa.Table, given: list[str], values: dict[str, Any]) -> list[str]:
    keys = given or primary_key(table)
    if not keys:
        raise PermanentError(
            f"key_columns: table {table.name!r} has no primary key; name the columns of a "
            "unique constraint"
        )
    check_columns(table, keys, "key_columns")
    missing = [key for key in keys if values.get(key) is None]
    if missing:
        raise PermanentError(f"values: give the key column(s) {missing}: they find the row")
    return keys


async def _upsert(
    db: AsyncConnection, table: sa.Table, values: dict[str, Any], keys: list[str]
) -> tuple[dict[str, Any], bool]:
    dialect = db.dialect.name
    if dialect not in ("postgresql", "sqlite"):
        raise PermanentError(f"upsert_row works on SQLite and PostgreSQL, not {dialect}")
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
    stmt = insert.values(values)
    # With nothing but keys to set, "update" the keys: RETURNING then still gives the row.
    changed = [name for name in values if name not in keys] or keys
    stmt = stmt.on_conflict_do_update(
        index_elements=keys, set_={name: stmt.excluded[name] for name in changed}
    )
    if dialect == "postgresql":
        # xmax is 0 on a row version this statement inserted, set when it updated one.
        flag: sa.Label[Any] = sa.literal_column("xmax = 0").label(_INSERTED)
        found = (await db.execute(stmt.returning(*table.c, flag))).one()._asdict()
        inserted = bool(found.pop(_INSERTED))
        return row_json(found), inserted
    # SQLite: the write transaction (BEGIN IMMEDIATE) holds the lock across both statements.
    match = sa.and_(*(table.c[key] == values[key] for key in keys))
    existed = (await db.execute(sa.select(sa.literal(1)).where(match))).first() is not None
    row = (await db.execute(stmt.returning(*table.c))).one()
    return row_json(row), not existed


@app.action("run_query", title="Run a SQL query")
async def run_query(input: RunQueryInput, ctx: ActionContext) -> QueryResult:
    """Runs one SQL statement with named parameters (`:email`), which are always sent bound,
    never written into the SQL, and returns the rows as objects (at most `max_rows`).

    By default the statement runs read-only and is rolled back, so a lookup cannot change
    data by mistake; with `read_only: false` it may write and is committed. Read-only is a
    safety net, not a permission: give zapflow a database user with only the rights it needs.

    `max_rows` caps what the step returns; a `LIMIT` in the SQL keeps the database from
    sending more. On PostgreSQL cast a parameter as `(:since)::timestamptz` or
    `CAST(:since AS timestamptz)` (`:since::timestamptz` is not a parameter). Times come back
    as ISO text and exact numbers (NUMERIC) as text, so no digit is lost.
    """
    connection = _connection(ctx)
    params = {name: parameter_value(value) for name, value in input.params.items()}
    write = not input.read_only
    async with transaction(connection, ctx.connection_name, write=write, read_only=not write) as db:
        result = await db.execute(sa.text(input.sql), params)
        if not result.returns_rows:
            affected = result.rowcount if result.rowcount >= 0 else None
            return QueryResult(
                rows=[],
                first_row=None,
                columns=[],
                row_count=0,
                truncated=False,
                affected_rows=affected,
            )
        columns = list(result.keys())
        fetched = result.fetchmany(input.max_rows + 1)
    rows = [row_json(row) for row in fetched[: input.max_rows]]
    return QueryResult(
        rows=rows,
        first_row=rows[0] if rows else None,
        columns=columns,
        row_count=len(rows),
        truncated=len(fetched) > input.max_rows,
        affected_rows=None,
    )


@app.connection_check
async def check(connection: Any, name: str) -> str:
    """A cheap real call: connect and list the tables."""
    async with transaction(connection, name, write=False, read_only=True) as db:
        tables = await db.run_sync(lambda sync: sa.inspect(sync).get_table_names())
    return f"{described(connection.database_url)}: connected, {len(tables)} table(s)"
