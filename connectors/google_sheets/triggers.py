"""The Google Sheets app's polling trigger: new or changed rows of a sheet."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import Field

from connectors._contract import PollingOptions, PollResult
from connectors._sheets.models import ROW_CHANGE_SAMPLE, RowChange, WatchFields
from connectors._sheets.table import Table, row_changes
from connectors.google_sheets._app import app
from connectors.google_sheets.actions import SpreadsheetId
from connectors.google_sheets.client import Sheets, quoted
from connectors.google_sheets.connection import GoogleSheetsConnection


class SheetOptions(PollingOptions):
    spreadsheet: SpreadsheetId = Field(
        description="The spreadsheet's id, or its URL; share it with the connection's service "
        "account"
    )
    sheet: str | None = Field(
        None, min_length=1, description="The sheet (tab) name; default the first sheet"
    )


class NewOrUpdatedRowOptions(WatchFields, SheetOptions):
    pass


@app.polling_trigger(
    "new_or_updated_row",
    title="New or updated row",
    payload=RowChange,
    samples=[ROW_CHANGE_SAMPLE],
    interval=timedelta(minutes=1),
)
async def new_or_updated_row(
    connection: GoogleSheetsConnection,
    options: NewOrUpdatedRowOptions,
    cursor: dict[str, Any] | None,
) -> PollResult:
    """Starts the zap once for each row added to the sheet, and again each time a row's values
    change (`trigger.change` says which: new or updated). A row is identified by its
    `key_column` (or its row number), and a change is noticed by a fingerprint of its values
    (of `watch_columns` only, when given); each poll reads the sheet once (values.get). The
    zap reads the cells as `trigger.row.<column>`.
    """
    sheets = Sheets(connection, None, options.spreadsheet)
    title = await sheets.title(options.sheet)
    table = Table.of(await sheets.values(quoted(title)))
    return row_changes(
        table,
        cursor,
        key_column=options.key_column,
        watch_columns=options.watch_columns,
        where=f"sheet {title!r}",
    )
