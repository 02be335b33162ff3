"""Slack: post messages with a bot token (``chat.postMessage``) or to an incoming webhook.

``connection.py`` declares the credentials, ``webhooks.py`` posts to a chat webhook (shared with
the Teams app), ``web_api.py`` calls Slack's Web API and reads its ``{"ok": false, "error": …}``
answers, ``actions.py`` holds the actions.
"""

from connectors.slack import actions  # noqa: F401  (they register)
from connectors.slack._app import app

__all__ = ["app"]
