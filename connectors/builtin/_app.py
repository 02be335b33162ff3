from __future__ import annotations

from connectors._contract import App

app = App(
    "builtin",
    title="Built-in tools",
    description=(
        "Formatter, delay and lookup table, catch hook and schedule: the tools every zap can "
        "use, no connection needed."
    ),
)
