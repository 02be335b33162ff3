"""Google Sheets: rows of a Google sheet by column name, through the Sheets API v4.

``connection.py`` holds the service account's key, ``auth.py`` turns it into access tokens
(a signed JWT exchanged at the token URI, kept until it expires), ``client.py`` calls the API
and classifies its failures, ``actions.py`` and ``triggers.py`` declare the steps and the
trigger. What a step does with the rows is shared with the spreadsheet app
(``connectors/spreadsheet/steps.py`` and ``table.py``).
"""

from connectors.google_sheets import actions, triggers  # noqa: F401  (they register)
from connectors.google_sheets._app import app

__all__ = ["app"]
