from __future__ import annotations

from connectors._contract import App
from connectors.slack.connection import SlackConnection

app = App(
    "slack",
    title="Slack",
    description=(
        "Post Slack messages (text or Block Kit blocks): with a bot token to any channel the "
        "bot is in, threads included, or to an incoming webhook. A step that gives its own "
        "webhook_url needs no connection."
    ),
    connection=SlackConnection,
    connection_required=False,
)
