"""Storage: key-value storage for zaps, kept in zapflow's own database.

``store.py`` reads and changes the ``zapflow_storage`` table atomically, ``actions.py`` holds
the actions.
"""

from connectors.storage import actions  # noqa: F401  (they register)
from connectors.storage._app import app

__all__ = ["app"]
