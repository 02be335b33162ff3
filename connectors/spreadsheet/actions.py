"""The spreadsheet app's actions: append, find and update rows of a local .xlsx or .csv file."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from connectors._contract import ActionContext
from connectors._errors import PermanentError
from connectors._sheets import steps
from connectors._sheets.models import (
    AppendedRow,
    AppendFields,
    FindFields,
    FoundRows,
    UpdatedRow,
    UpdateFields,
)
from connectors._sheets.table import RowWrite, Table
from connectors.spreadsheet import files
from connectors.spreadsheet._app import app
from connectors.spreadsheet.connection import (
    FILE_HELP,
    SHEET_HELP,
    FileName,
    SpreadsheetConnection,
    check_sheet,
    resolve,
)


class FileTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: FileName = Field(description=FILE_HELP, examples=["follow-ups.xlsx"])
    sheet: str | None = Field(None, min_length=1, description=SHEET_HELP)


class AppendRowInput(AppendFields, FileTarget):
    pass


class FindRowsInput(FindFields, FileTarget):
    pass


class UpdateRowInput(UpdateFields, FileTarget):
    pass


def _target(target: FileTarget, ctx: ActionContext) -> tuple[Path, str | None, str]:
    connection = ctx.connection
    assert connection is None or isinstance(connection, SpreadsheetConnection)
    path = resolve(target.file, connection)
    sheet = check_sheet(path, target.sheet)
    return path, sheet, files.described(path, sheet)


@app.action("append_row", title="Append a row")
async def append_row(input: AppendRowInput, ctx: ActionContext) -> AppendedRow:
    """Adds a row under the last one, each value in the column whose header you name.

    A missing file (or worksheet, or an empty one) is created with a header row made of the
    row's columns. A column the header lacks fails the step naming the columns there are,
    unless `add_columns` is true. Runs appending to one file at once each add their row.
    """
    path, sheet, where = _target(input, ctx)

    def plan(table: Table) -> tuple[RowWrite, AppendedRow]:
        return steps.append(table, input, where)

    return await asyncio.to_thread(files.change, path, sheet, plan, create=True)


@app.action("find_rows", title="Find rows", side_effects=False)
async def find_rows(input: FindRowsInput, ctx: ActionContext) -> FoundRows:
    """Finds the rows where a column holds a value (the whole cell, as text; as numbers when
    both are plainly written numbers), or every row without a column. Gives them as column →
    value with their row numbers, and the first one on its own (`first`, null when none
    matched), so `steps.<id>.first.Status` reads a single row."""
    path, sheet, where = _target(input, ctx)
    table = await asyncio.to_thread(files.read_table, path, sheet)
    return steps.find(table, input, where)


@app.action("update_row", title="Update a row")
async def update_row(input: UpdateRowInput, ctx: ActionContext) -> UpdatedRow:
    """Changes the columns you give of one row, found by `row_number` or by `column` and
    `value` (the first matching row); the other cells, formulas and formatting stay as they
    are. When no row matches: fail, skip, or append one (`if_missing`)."""
    path, sheet, where = _target(input, ctx)

    def plan(table: Table) -> tuple[RowWrite | None, UpdatedRow]:
        done = steps.update(table, input, where)
        return done.write, done.output

    create = input.if_missing == "append"
    return await asyncio.to_thread(files.change, path, sheet, plan, create=create)


@app.connection_check
async def check(connection: SpreadsheetConnection, name: str) -> str:
    """The folder must exist and be writable."""
    root = connection.root()
    if not root.is_dir():
        raise PermanentError(f"connection {name!r}: folder {root} does not exist")
    probe = files.lock_path(root / "zapflow-check.csv")
    try:
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise PermanentError(f"connection {name!r}: cannot write in {root} ({exc})") from None
    return f"folder {root} is there and writable"
