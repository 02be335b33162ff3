"""A received message as a trigger payload: who sent it, to whom, subject, date, bodies and
attachments, as the fields a zap reads (``trigger.subject``, ``trigger.text`` …)."""

from __future__ import annotations

import base64
from email import message_from_bytes
from email.message import EmailMessage, Message
from email.policy import default
from email.utils import parsedate_to_datetime
from typing import Any

from pydantic import BaseModel, Field

MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024


class ReceivedAttachment(BaseModel):
    filename: str = Field(description="The file's name, e.g. invoice.pdf")
    content_type: str = Field(description="Its media type, e.g. application/pdf")
    size: int = Field(description="Its size in bytes")
    content_base64: str | None = Field(
        None,
        description="With include_attachments: the content in base64 (as email.send_email "
        "takes it), for files up to 10 MB",
    )


class Email(BaseModel):
    """One message that arrived in the mailbox."""

    uid: int = Field(description="The message's IMAP UID in the mailbox")
    message_id: str = Field(description="Its Message-ID header")
    sender: str = Field(description="The From address, e.g. chan@example.com")
    sender_name: str = Field(description="The From name, e.g. Chan Tai Man; empty if none")
    to: list[str] = Field(description="The To addresses")
    cc: list[str] = Field(description="The Cc addresses")
    reply_to: list[str] = Field(description="The Reply-To addresses; empty if none")
    subject: str = Field(description="The subject line")
    date: str = Field(description="The Date header in ISO 8601; empty if missing or unreadable")
    in_reply_to: str = Field(description="The In-Reply-To header: the message it answers")
    text: str = Field(description="The plain-text body; empty if there is none")
    html: str = Field(description="The HTML body; empty if there is none")
    attachments: list[ReceivedAttachment] = Field(description="The attached files")


def _addresses(msg: Message, header: str) -> list[tuple[str, str]]:
    value = msg.get(header)
    found = getattr(value, "addresses", ()) if value is not None else ()
    return [(a.display_name, a.addr_spec) for a in found]


def _date(msg: Message) -> str:
    try:
        return parsedate_to_datetime(str(msg.get("Date", ""))).isoformat()
    except (TypeError, ValueError):
        return ""


def _body(msg: EmailMessage, kind: str) -> str:
    part = msg.get_body(preferencelist=(kind,))
    if part is None:
        return ""
    try:
        text = str(part.get_content())
    except (LookupError, UnicodeError):  # an unknown or wrong charset
        raw = part.get_payload(decode=True)
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else ""
    return text.replace("\r\n", "\n")  # mail travels with CRLF line ends


def _attachments(msg: EmailMessage, with_content: bool) -> list[ReceivedAttachment]:
    found = []
    for part in msg.iter_attachments():
        data = part.get_payload(decode=True)
        data = data if isinstance(data, bytes) else b""
        content = None
        if with_content and len(data) <= MAX_ATTACHMENT_BYTES:
            content = base64.b64encode(data).decode()
        name = part.get_filename() or "attachment"
        found.append(
            ReceivedAttachment(
                filename=name,
                content_type=part.get_content_type(),
                size=len(data),
                content_base64=content,
            )
        )
    return found


def parsed(uid: int, raw: bytes, with_attachments: bool) -> dict[str, Any]:
    """The payload of one raw message."""
    msg = message_from_bytes(raw, policy=default)
    assert isinstance(msg, EmailMessage)
    sender = (_addresses(msg, "From") or [("", "")])[0]
    email = Email(
        uid=uid,
        message_id=str(msg.get("Message-ID", "")).strip(),
        sender=sender[1],
        sender_name=sender[0],
        to=[addr for _, addr in _addresses(msg, "To")],
        cc=[addr for _, addr in _addresses(msg, "Cc")],
        reply_to=[addr for _, addr in _addresses(msg, "Reply-To")],
        subject=str(msg.get("Subject", "")),
        date=_date(msg),
        in_reply_to=str(msg.get("In-Reply-To", "")).strip(),
        text=_body(msg, "plain"),
        html=_body(msg, "html"),
        attachments=_attachments(msg, with_attachments),
    )
    return email.model_dump(mode="json")
