"""The SQL app's polling trigger: new rows of a table, by a column that grows."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncConnection

from connectors._contract import PollingOptions, PollResult
from connectors._errors import PermanentError
from connectors.sql._app import app
from connectors.sql.actions import TableName
from connectors.sql.connection import SqlConnection
from connectors.sql.database import (
    check_columns,
    column_value,
    column_values,
    primary_key,
    row_json,
    table_named,
    transaction,
)

Scalar = str | int | float | bool
# A label no real column has: the order value as the cursor keeps it.
_MARK = "zapflow_cursor_mark"


class NewRowOptions(PollingOptions):
    table: TableName
    order_column: str = Field(
        min_length=1,
        description="A column that grows with each new row: an auto-increment id, or a "
        "creation time; rows with a higher value than any seen are new",
        examples=["id"],
    )
    where: dict[str, Scalar] = Field(
        default_factory=dict,
        description="Only rows whose columns equal these values, e.g. {status: paid}",
    )
    limit: int = Field(
        100,
        ge=1,
        le=1000,
        description="Most rows one poll starts the zap on; more wait for the next poll",
    )


class Row(BaseModel):
    """One row: its columns are what the zap reads as ``trigger.<column>``."""

    model_config = ConfigDict(extra="allow")


@app.polling_trigger(
    "new_row",
    title="New row",
    payload=Row,
    samples=[{"id": 42, "email": "chan@example.com", "created_at": "2026-11-25T09:30:00"}],
    interval=timedelta(minutes=1),
)
async def new_row(
    connection: SqlConnection | None, options: NewRowOptions, cursor: dict[str, Any] | None
) -> PollResult:
    """Starts the zap once for each new row of a table, oldest first, where new means a
    higher `order_column` value than any row seen (rows sharing the highest value are told
    apart by their primary key, or by all their columns when the table has none).

    The first poll starts from the rows there now, like Zapier: only rows added later run the
    zap (`skip_existing: false` runs it on the existing rows too, `limit` per poll). Use a
    column the database sets when the row is committed in order, such as an auto-increment id:
    a row committed late with a lower value than one already seen is not noticed.
    """
    if connection is None:
        raise PermanentError("sql.new_row needs a connection: the trigger's `connection:`")
    async with transaction(connection, None, write=False) as db:
        table = await table_named(db, options.table)
        check_columns(table, [options.order_column], "order_column")
        order = _Order(table.c[options.order_column], db.dialect.name)
        where = [
            table.c[name] == value
            for name, value in column_values(table, options.where, "where").items()
        ]
        where.append(order.column.is_not(None))
        if cursor is None and options.skip_existing:
            return await _latest(db, table, order, where)
        return await _after(db, table, order, where, cursor or {}, options.limit)


class _Order:
    """The order column as the cursor holds it. SQLite keeps times as text, in whatever format
    the program that wrote them chose: they are compared (and kept) as that very text, never
    reformatted, so they sort as stored."""

    def __init__(self, column: sa.Column[Any], dialect: str) -> None:
        self.column = column
        self.raw = dialect == "sqlite" and isinstance(column.type, sa.Date | sa.DateTime | sa.Time)
        self.mark: Any = sa.type_coerce(column, sa.Text()) if self.raw else column

    def bound(self, value: Any) -> Any:
        return value if self.raw else column_value(self.column, value, "the trigger's cursor")


async def _latest(
    db: AsyncConnection, table: sa.Table, order: _Order, where: list[Any]
) -> PollResult:
    """The first poll: the rows at the highest value there is (noted, not run on)."""
    top = (await db.execute(sa.select(sa.func.max(order.mark)).where(*where))).scalar()
    if top is None:  # nothing yet: every row to come is new
        return PollResult([], {"last": None, "ties": []})
    rows = (await db.execute(sa.select(table).where(*where, order.mark == top))).all()
    items = _items(table, [row_json(row) for row in rows])
    last = row_json({"v": top})["v"]
    return PollResult(items, {"last": last, "ties": [key for key, _ in items]})


async def _after(
    db: AsyncConnection,
    table: sa.Table,
    order: _Order,
    where: list[Any],
    cursor: dict[str, Any],
    limit: int,
) -> PollResult:
    last, ties = cursor.get("last"), list(cursor.get("ties") or [])
    stmt = sa.select(table, order.mark.label(_MARK)).where(*where)
    if last is not None:
        stmt = stmt.where(order.mark >= order.bound(last))
    tiebreak = [table.c[name] for name in primary_key(table)]
    # Rows at `last` seen before come back too: fetch enough to have `limit` new ones.
    stmt = stmt.order_by(order.mark, *tiebreak).limit(limit + len(ties))
    marked = [row_json(row) for row in (await db.execute(stmt)).all()]
    marks = [row.pop(_MARK) for row in marked]
    seen = set(ties)
    found = [
        (key, row, mark) for (key, row), mark in zip(_items(table, marked), marks, strict=True)
    ]
    found = [item for item in found if item[0] not in seen][:limit]
    if not found:
        return PollResult([], cursor)
    top = found[-1][2]
    at_top = [key for key, _, mark in found if mark == top]
    items = [(key, row) for key, row, _ in found]
    return PollResult(items, {"last": top, "ties": ties + at_top if top == last else at_top})


def _items(table: sa.Table, rows: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Each row with the key that identifies it for good: its primary key, else all of it."""
    keys = primary_key(table)
    return [
        (json.dumps([row[k] for k in keys] if keys else row, sort_keys=True, default=str), row)
        for row in rows
    ]
