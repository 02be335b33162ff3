from __future__ import annotations

from connectors._contract import App

app = App(
    "storage",
    title="Storage",
    description=(
        "Keep values between zap runs, like Zapier's Storage: set, get and delete a JSON value "
        "by key, increment a counter and add to or take from a list atomically. Each zap has "
        "storage of its own; zaps that name the same `namespace` share one. Values live in "
        "zapflow's own database (the inbox's: SQLite in the state folder, or "
        "$ZAPFLOW_INBOX_URL) and survive restarts. Limits: keys up to 255 characters, values "
        "up to 64 KB as JSON, 10,000 keys per namespace (Zapier: 32 characters, 2,500 bytes, "
        "500 keys)."
    ),
)
