"""Built-in tools: formatter (text, numbers, dates), delay, lookup table; catch hook and schedule
triggers.

Like Zapier's Formatter, Delay and Lookup Table: actions that need no connection.
"""

from connectors.builtin import (  # noqa: F401  (they register)
    delay,
    formatter,
    lookup,
    schedule,
    triggers,
)
from connectors.builtin._app import app

__all__ = ["app"]
