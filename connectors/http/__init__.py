"""HTTP / webhooks: a custom request action and signed outgoing webhooks, for any service
zapflow has no app for.

``connection.py`` declares the credentials, ``client.py`` sends a request and classifies its
failures, ``actions.py`` holds the two actions.
"""

from connectors.http import actions  # noqa: F401  (it registers)
from connectors.http._app import app

__all__ = ["app"]
