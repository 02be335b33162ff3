"""What a CINNOX webhook delivery means: a URL verification challenge, or one trigger event."""

from __future__ import annotations

from typing import Any

from connectors._contract import Inbound, WebhookReply
from connectors.cinnox import wire
from connectors.cinnox._app import app
from connectors.cinnox.reading import from_wire, normal, occurrence
from connectors.cinnox.triggers import FAMILY_OF, UnknownEvent

app.webhook_channels = tuple(dict.fromkeys(FAMILY_OF.values()))
"""CINNOX delivers on one channel per event family (``zapflow cinnox subscribe``)."""


@app.webhook_adapter
def receive(family: str, body: Any) -> list[Inbound] | WebhookReply:
    """``family`` is the last segment of the hook URL ``zapflow cinnox subscribe`` registered.

    A JSON array is read as a batch of events, all or none. Raises ``UnknownEvent`` (a
    ValueError) for a body ``reading`` cannot read: the receiver keeps it as unrecognised."""
    if isinstance(body, dict) and _is_challenge(body):
        return WebhookReply(wire.challenge_reply(str(body["challenge"])))
    batch = body if isinstance(body, list) and body else [body]
    read = []
    for i, item in enumerate(batch):
        try:
            trigger, payload = from_wire(family, item)
        except UnknownEvent as exc:
            if len(batch) == 1:
                raise
            raise UnknownEvent(f"item {i} of the batch: {exc}") from None
        read.append(Inbound(trigger, payload, occurrence(family, payload)))
    return read


def _is_challenge(body: dict[str, Any]) -> bool:
    """CINNOX's URL verification: ``{"challenge": …}`` (public), tolerating keys beside it
    (a type, a token) as long as nothing in it looks like an event."""
    challenge = body.get("challenge")
    if not isinstance(challenge, str | int) or isinstance(challenge, bool):
        return False
    return not any(normal(key) in ("status", "message", "data") for key in body)
