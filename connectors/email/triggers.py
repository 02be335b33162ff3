"""The email app's polling trigger: new messages in an IMAP mailbox."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import Field

from connectors._contract import PollingOptions, PollResult
from connectors._errors import PermanentError
from connectors.email import imap
from connectors.email._app import app
from connectors.email.connection import EmailConnection
from connectors.email.inbound import Email, parsed


class NewEmailOptions(PollingOptions):
    mailbox: str = Field("INBOX", min_length=1, description="The mailbox (folder) to watch")
    from_contains: str = Field(
        "",
        description="Only messages whose From (name or address) contains this, any case, e.g. "
        "@shop.example.com",
    )
    subject_contains: str = Field(
        "", description="Only messages whose subject contains this, any case, e.g. order"
    )
    include_attachments: bool = Field(
        False,
        description="Put each attachment's content (base64, files up to 10 MB) in the "
        "payload, e.g. to forward it with email.send_email; default: names and sizes only",
    )
    max_per_poll: int = Field(
        50, ge=1, le=500, description="At most this many messages per poll; the rest wait"
    )


SAMPLE = {
    "uid": 4211,
    "message_id": "<order-1001@shop.example.com>",
    "sender": "orders@shop.example.com",
    "sender_name": "Acme Shop",
    "to": ["sales@example.com"],
    "cc": [],
    "reply_to": [],
    "subject": "New order 1001 from Chan Tai Man",
    "date": "2026-11-25T09:30:00+08:00",
    "in_reply_to": "",
    "text": "Order 1001: 2 × Oolong tea, HK$1,250.50\n",
    "html": "",
    "attachments": [
        {
            "filename": "order-1001.pdf",
            "content_type": "application/pdf",
            "size": 48213,
            "content_base64": None,
        }
    ],
}


def _wanted(email: dict[str, Any], options: NewEmailOptions) -> bool:
    sender = f"{email['sender_name']} <{email['sender']}>".lower()
    return (
        options.from_contains.lower() in sender
        and options.subject_contains.lower() in email["subject"].lower()
    )


@app.polling_trigger(
    "new_email",
    title="New email",
    payload=Email,
    samples=[SAMPLE],
    interval=timedelta(minutes=2),
)
async def new_email(
    connection: EmailConnection | None, options: NewEmailOptions, cursor: dict[str, Any] | None
) -> PollResult:
    """Polls a mailbox over IMAP (the connection's imap_host) and starts the zap once for each
    message that arrived since the last poll, optionally only those whose sender or subject
    contains a text. The zap reads `trigger.sender`, `trigger.subject`, `trigger.text` …

    The mailbox is opened read-only: polling never marks mail as read or moves it. New mail
    is what has a higher IMAP UID than the last message seen; on the first poll the latest
    `max_per_poll` messages are only noted (`skip_existing`).
    """
    if connection is None or not connection.imap_host:
        raise PermanentError(
            "email.new_email reads mail over IMAP: give the zap a connection with an imap_host"
        )
    after = (cursor["uidvalidity"], cursor["last_uid"]) if cursor else None
    found = await imap.fetch_new(connection, options.mailbox, after, options.max_per_poll, None)
    items = []
    for uid, raw in found.messages:
        email = parsed(uid, raw, options.include_attachments)
        if _wanted(email, options):
            key = email["message_id"] or f"uid:{found.uidvalidity}:{uid}"
            items.append((key, email))
    same_numbering = after is not None and after[0] == found.uidvalidity
    last = (
        found.messages[-1][0] if found.messages else (after[1] if after and same_numbering else 0)
    )
    return PollResult(items, {"uidvalidity": found.uidvalidity, "last_uid": last})
