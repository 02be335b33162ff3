"""Spreadsheet files: rows of local .xlsx (openpyxl) and .csv files by column name.

``table.py``, ``models.py`` and ``steps.py`` hold what this app and ``google_sheets`` share (header
mapping, row matching, change fingerprints, the step models); ``files.py`` reads and writes
local files safely; ``actions.py`` and ``triggers.py`` declare the app's steps and its trigger.
"""

from connectors.spreadsheet import actions, triggers  # noqa: F401  (they register)
from connectors.spreadsheet._app import app

__all__ = ["app"]
