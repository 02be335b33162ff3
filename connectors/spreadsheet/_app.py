from __future__ import annotations

from connectors._contract import App
from connectors.spreadsheet.connection import SpreadsheetConnection

app = App(
    "spreadsheet",
    title="Spreadsheet files (.xlsx, .csv)",
    description=(
        "Append, find and update rows of local .xlsx and .csv files by column name, and start "
        "zaps on new or changed rows. Writes are atomic and locked, so runs writing at once all "
        "land and a crash never leaves half a file. A connection (a folder) is optional."
    ),
    connection=SpreadsheetConnection,
    connection_required=False,
)
