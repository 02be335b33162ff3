from __future__ import annotations

from connectors._contract import App
from connectors.teams.connection import TeamsConnection

app = App(
    "teams",
    title="Microsoft Teams",
    description=(
        "Post messages to a Teams channel through its webhook (a Workflows webhook or a classic "
        "incoming webhook): a title and text, or any Adaptive Card. A step that gives its own "
        "webhook_url needs no connection."
    ),
    connection=TeamsConnection,
    connection_required=False,
)
