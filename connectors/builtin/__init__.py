"""Built-in tools: formatter (text, numbers, dates), delay, lookup table, and a catch hook trigger.

Like Zapier's Formatter, Delay and Lookup Table: actions that need no connection.
"""

from connectors.builtin import delay, formatter, lookup, triggers  # noqa: F401  (they register)
from connectors.builtin._app import app

__all__ = ["app"]
