from __future__ import annotations

from connectors._contract import App
from connectors.google_sheets.connection import GoogleSheetsConnection

app = App(
    "google_sheets",
    title="Google Sheets",
    description=(
        "Append, find and update rows of a Google sheet by column name, and start zaps on new "
        "or changed rows, through the Sheets API v4 with a service account (share the "
        "spreadsheet with its e-mail address)."
    ),
    connection=GoogleSheetsConnection,
)
