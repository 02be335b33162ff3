"""The spreadsheet app's polling trigger: new or changed rows of a local file."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from pydantic import Field

from connectors._contract import PollingOptions, PollResult
from connectors._sheets.models import ROW_CHANGE_SAMPLE, RowChange, WatchFields
from connectors._sheets.table import row_changes
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


class FileOptions(PollingOptions):
    file: FileName = Field(description=FILE_HELP, examples=["follow-ups.xlsx"])
    sheet: str | None = Field(None, min_length=1, description=SHEET_HELP)


class NewOrUpdatedRowOptions(WatchFields, FileOptions):
    pass


@app.polling_trigger(
    "new_or_updated_row",
    title="New or updated row",
    payload=RowChange,
    samples=[ROW_CHANGE_SAMPLE],
    interval=timedelta(minutes=1),
)
async def new_or_updated_row(
    connection: SpreadsheetConnection | None,
    options: NewOrUpdatedRowOptions,
    cursor: dict[str, Any] | None,
) -> PollResult:
    """Starts the zap once for each row added to the file, and again each time a row's values
    change (`trigger.change` says which: new or updated). A row is identified by its
    `key_column` (or its row number), and a change is noticed by a fingerprint of its values
    (of `watch_columns` only, when given). Empty rows, and rows whose key is still empty, wait
    until they have one. The zap reads the cells as `trigger.row.<column>`.
    """
    path = resolve(options.file, connection)
    sheet = check_sheet(path, options.sheet)
    table = await asyncio.to_thread(files.read_table, path, sheet)
    return row_changes(
        table,
        cursor,
        key_column=options.key_column,
        watch_columns=options.watch_columns,
        where=files.described(path, sheet),
    )
