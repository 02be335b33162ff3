"""Microsoft Teams: post a message (text or an Adaptive Card) to a channel's webhook, made with
a Workflows "when a Teams webhook request is received" flow or a classic incoming webhook.

Posting shares ``connectors.slack.webhooks`` with Slack's incoming webhooks; ``actions.py``
builds the card and reads Teams' answers.
"""

from connectors.teams import actions  # noqa: F401  (it registers)
from connectors.teams._app import app

__all__ = ["app"]
