"""What a CINNOX webhook delivery means: a URL verification challenge, or one trigger event."""

from __future__ import annotations

from typing import Any

from connectors._contract import Inbound, WebhookReply
from connectors.cinnox import wire
from connectors.cinnox._app import app
from connectors.cinnox.reading import from_wire, normal, occurrence


@app.webhook_adapter
def receive(family: str, body: dict[str, Any]) -> list[Inbound] | WebhookReply:
    """``family`` is the last segment of the hook URL ``zapflow cinnox subscribe`` registered.

    Raises ``UnknownEvent`` (a ValueError) for a body ``reading`` cannot read: the receiver
    keeps it as unrecognised."""
    if _is_challenge(body):
        return WebhookReply(wire.challenge_reply(str(body["challenge"])))
    trigger, payload = from_wire(family, body)
    return [Inbound(trigger, payload, occurrence(family, payload))]


def _is_challenge(body: dict[str, Any]) -> bool:
    """CINNOX's URL verification: ``{"challenge": …}`` (public), tolerating keys beside it
    (a type, a token) as long as nothing in it looks like an event."""
    challenge = body.get("challenge")
    if not isinstance(challenge, str | int) or isinstance(challenge, bool):
        return False
    return not any(normal(key) in ("status", "message", "data") for key in body)
