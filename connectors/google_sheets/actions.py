"""The Google Sheets app's actions: append, find and update rows of a sheet by column name."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from connectors._contract import ActionContext
from connectors._sheets import steps
from connectors._sheets.models import (
    AppendedRow,
    AppendFields,
    FindFields,
    FoundRows,
    UpdatedRow,
    UpdateFields,
)
from connectors._sheets.table import HEADER_ROW, RowWrite, Table
from connectors.google_sheets._app import app
from connectors.google_sheets.auth import access_token
from connectors.google_sheets.client import Sheets, column_letters, quoted
from connectors.google_sheets.connection import GoogleSheetsConnection

_ID = re.compile(r"[A-Za-z0-9_-]{10,}")
_URL_ID = re.compile(r"/spreadsheets/d/([A-Za-z0-9_-]+)")


def _spreadsheet_id(value: str) -> str:
    value = value.strip()
    found = _URL_ID.search(value)
    if found:
        return found.group(1)
    if not _ID.fullmatch(value):
        raise ValueError(
            "give the spreadsheet's id (the part of its URL after /d/) or its whole URL, "
            f"got {value!r}"
        )
    return value


SpreadsheetId = Annotated[str, AfterValidator(_spreadsheet_id)]


class SheetTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spreadsheet: SpreadsheetId = Field(
        description="The spreadsheet's id, or its URL (https://docs.google.com/spreadsheets/d/"
        "<id>/edit); share it with the connection's service account",
        examples=["1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms"],
    )
    sheet: str | None = Field(
        None, min_length=1, description="The sheet (tab) name; default the first sheet"
    )


class WriteTarget(SheetTarget):
    value_input: Literal["raw", "user_entered"] = Field(
        "raw",
        description="raw: values are stored as given (text stays text, so '=…' from a trigger "
        "is never a formula); user_entered: parsed as if typed (dates, numbers, formulas)",
    )


class AppendRowInput(AppendFields, WriteTarget):
    pass


class FindRowsInput(FindFields, SheetTarget):
    pass


class UpdateRowInput(UpdateFields, WriteTarget):
    pass


def _wire(value: Any) -> Any:
    """A cell as the API takes it: JSON scalars, dates as ISO text, empty as ""."""
    if value is None:
        return ""
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _open(target: SheetTarget, ctx: ActionContext) -> Sheets:
    assert isinstance(ctx.connection, GoogleSheetsConnection)
    return Sheets(ctx.connection, ctx.connection_name, target.spreadsheet)


def _option(target: WriteTarget) -> str:
    return target.value_input.upper()


def _where(title: str) -> str:
    return f"sheet {title!r}"


async def _append(sheets: Sheets, title: str, table: Table, write: RowWrite, option: str) -> int:
    """Append the write's row (after its header, on an empty sheet); its row number."""
    width = max(write.cells, default=-1) + 1
    row = [_wire(write.cells.get(i)) for i in range(width)]
    if write.created and write.header is not None:
        return await sheets.append(f"{quoted(title)}!A1", [write.header, row], option)
    if write.header is not None:
        await _write_cells(sheets, title, HEADER_ROW, _new_header_cells(table, write), option)
    return await sheets.append(f"{quoted(title)}!A1", [row], option)


def _new_header_cells(table: Table, write: RowWrite) -> dict[int, Any]:
    assert write.header is not None
    return {write.header.index(name): name for name in write.added}


def _ranges(title: str, number: int, cells: dict[int, Any]) -> dict[str, Any]:
    """Cells of one row by their A1 range."""
    return {f"{quoted(title)}!{column_letters(i)}{number}": _wire(v) for i, v in cells.items()}


async def _write_cells(
    sheets: Sheets, title: str, number: int, cells: dict[int, Any], option: str
) -> None:
    await sheets.write(_ranges(title, number, cells), option)


@app.action("append_row", title="Append a row")
async def append_row(input: AppendRowInput, ctx: ActionContext) -> AppendedRow:
    """Adds a row under the sheet's table (values:append), each value in the column whose
    header you name. On an empty sheet the row's columns become the header row. A column the
    header lacks fails the step naming the columns there are, unless `add_columns` is true.
    """
    sheets = _open(input, ctx)
    title = await sheets.title(input.sheet)
    table = Table.of(await sheets.values(f"{quoted(title)}!1:1"))
    write, out = steps.append(table, input, _where(title))
    number = await _append(sheets, title, table, write, _option(input))
    return out.model_copy(update={"row_number": number})


@app.action("find_rows", title="Find rows", side_effects=False)
async def find_rows(input: FindRowsInput, ctx: ActionContext) -> FoundRows:
    """Finds the rows where a column holds a value (the whole cell, as text; as numbers when
    both are numbers), or every row without a column. Gives them as column → value with their
    row numbers, and the first on its own (`first`, null when none matched)."""
    sheets = _open(input, ctx)
    title = await sheets.title(input.sheet)
    table = Table.of(await sheets.values(quoted(title)))
    return steps.find(table, input, _where(title))


@app.action("update_row", title="Update a row")
async def update_row(input: UpdateRowInput, ctx: ActionContext) -> UpdatedRow:
    """Changes the columns you give of one row, found by `row_number` or by `column` and
    `value` (the first matching row), in one request that writes those cells only. When no
    row matches: fail, skip, or append one (`if_missing`)."""
    sheets = _open(input, ctx)
    title = await sheets.title(input.sheet)
    table = Table.of(await sheets.values(quoted(title)))
    done = steps.update(table, input, _where(title))
    write, out = done.write, done.output
    if write is None:
        return out
    if out.result == "appended":
        number = await _append(sheets, title, table, write, _option(input))
        return out.model_copy(update={"row_number": number})
    ranges = _ranges(title, write.number, write.cells)
    if write.header is not None:  # the new columns' header cells, in the same request
        ranges |= _ranges(title, HEADER_ROW, _new_header_cells(table, write))
    await sheets.write(ranges, _option(input))
    return out


@app.connection_check
async def check(connection: GoogleSheetsConnection, name: str) -> str:
    """A token from the token URI proves the key; sharing is checked by the first step."""
    await access_token(connection.key, name)
    return (
        f"service account {connection.key.client_email} got a token; share each spreadsheet with it"
    )
