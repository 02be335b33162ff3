"""HTTP / webhooks: a custom request action, signed outgoing webhooks and a trigger polling a JSON
list, for any service zapflow has no app for.

``connection.py`` declares the credentials, ``client.py`` sends a request and classifies its
failures, ``actions.py`` holds the two actions, ``triggers.py`` the polling trigger.
"""

from connectors.http import actions, triggers  # noqa: F401  (they register)
from connectors.http._app import app

__all__ = ["app"]
