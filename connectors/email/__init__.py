"""Email: send messages through any SMTP server, and read new ones from an IMAP mailbox.

``connection.py`` declares the account, ``addresses.py`` and ``message.py`` check addresses and
build the message, ``smtp.py`` delivers it, ``imap.py`` fetches new mail and ``inbound.py``
reads it into a payload, ``links.py`` turns failed links into the engine's errors;
``actions.py`` holds the action, ``triggers.py`` the polling trigger.
"""

from connectors.email import actions, triggers  # noqa: F401  (they register)
from connectors.email._app import app

__all__ = ["app"]
