"""What a CINNOX webhook delivery means: a URL verification challenge, or one trigger event."""

from __future__ import annotations

from typing import Any

from connectors._contract import Inbound, WebhookReply
from connectors.cinnox import wire
from connectors.cinnox._app import app
from connectors.cinnox.triggers import from_wire


@app.webhook_adapter
def receive(family: str, body: dict[str, Any]) -> list[Inbound] | WebhookReply:
    """``family`` is the last segment of the hook URL ``zapflow cinnox subscribe`` registered."""
    if set(body) == {"challenge"}:
        return WebhookReply(wire.challenge_reply(str(body["challenge"])))
    trigger, payload = from_wire(family, body)
    return [Inbound(trigger, payload, _occurrence(family, body))]


def _occurrence(family: str, body: dict[str, Any]) -> str | None:
    # Enquiry events and SMS receipts carry what identifies the occurrence; contact and label
    # events do not (two identical edits look the same), so those are never de-duplicated.
    if family == "inquiry" and body.get("inquiryID") and body.get("date"):
        return f"inquiry:{body['inquiryID']}:{body.get('status')}:{body['date']}"
    if family == "outbound-sms" and body.get("TransactionID"):
        return f"tdr:{body['TransactionID']}:{body.get('Status')}"
    return None
