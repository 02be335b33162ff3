"""SQL database: insert, upsert, a query with bound parameters, and a trigger on new rows.

``connection.py`` declares the URL, ``database.py`` holds the engines, table lookups, value
conversion and error classification, ``actions.py`` the actions, ``triggers.py`` the polling
trigger.
"""

from connectors.sql import actions, triggers  # noqa: F401  (they register)
from connectors.sql._app import app

__all__ = ["app"]
