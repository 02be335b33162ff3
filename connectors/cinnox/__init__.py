"""CINNOX: the connector (connection, client, triggers, actions) and its local sandbox.

``wire.py`` is the API on the wire, shared by ``client.py`` and ``sandbox/``.
"""

from connectors.cinnox import actions, triggers, webhooks  # noqa: F401  (they register)
from connectors.cinnox._app import app

__all__ = ["app"]
