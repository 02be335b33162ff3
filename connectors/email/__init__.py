"""Email: send messages through any SMTP server (STARTTLS, implicit TLS or plain).

``connection.py`` declares the SMTP account, ``message.py`` checks addresses and builds the
message, ``smtp.py`` delivers it and turns SMTP failures into the engine's errors,
``actions.py`` holds the action.
"""

from connectors.email import actions  # noqa: F401  (it registers)
from connectors.email._app import app

__all__ = ["app"]
