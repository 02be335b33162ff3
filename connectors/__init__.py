"""Apps zapflow can use: each sub-package is one app; this package holds the contract they share.

``connectors/<app>/`` holds everything about one app (connection, triggers, actions, and for
CINNOX its client and sandbox). The engine in ``flows/`` finds apps through ``registry``.
"""

from connectors._contract import (
    Action,
    ActionContext,
    App,
    Inbound,
    PollingOptions,
    PollResult,
    Trigger,
    TriggerKind,
    WebhookReply,
)
from connectors._errors import AuthError, ConnectorError, PermanentError, RetryableError

__all__ = [
    "Action",
    "ActionContext",
    "App",
    "Inbound",
    "AuthError",
    "ConnectorError",
    "PermanentError",
    "PollResult",
    "PollingOptions",
    "RetryableError",
    "Trigger",
    "TriggerKind",
    "WebhookReply",
]
