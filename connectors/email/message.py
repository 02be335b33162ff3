"""Building the message a step sends: bodies, attachments, headers and a Message-ID that stays
the same when the step is retried."""

from __future__ import annotations

import base64
import binascii
import hashlib
import mimetypes
import re
from email.message import EmailMessage
from email.policy import SMTP
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_ATTACHMENT_BYTES = 25 * 1024 * 1024
CONTENT_TYPE = re.compile(r"^[A-Za-z0-9][\w.+-]*/[A-Za-z0-9][\w.+-]*$")
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
RESERVED_HEADERS = {
    "from": "from",
    "to": "to",
    "cc": "cc",
    "bcc": "bcc",
    "reply-to": "reply_to",
    "subject": "subject",
    "message-id": None,
    "date": None,
    "mime-version": None,
    "content-type": None,
    "content-transfer-encoding": None,
    "content-disposition": None,
}
"""Headers a step may not set through ``headers``: the field that sets each, or None when
zapflow sets it itself."""


def single_line(value: str, what: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError(f"{what} may not contain line breaks")
    return value


class Attachment(BaseModel):
    """A file attached to the message, its content given as text or as base64."""

    model_config = ConfigDict(extra="forbid")

    filename: str = Field(
        min_length=1, max_length=255, description="The file's name, e.g. report.csv"
    )
    content: str | None = Field(
        None,
        description="The file's content as text (sent as UTF-8), e.g. a CSV an earlier step made",
    )
    content_base64: str | None = Field(
        None, description="The file's content in base64, e.g. a PDF an API answered with"
    )
    content_type: str | None = Field(
        None,
        description="Its media type, e.g. text/csv or application/pdf; default: guessed from "
        "the filename",
    )

    @field_validator("filename")
    @classmethod
    def _filename(cls, value: str) -> str:
        single_line(value, "a filename")
        if "/" in value or "\\" in value:
            raise ValueError("a filename is a name, not a path: no / or \\")
        return value

    @field_validator("content_type")
    @classmethod
    def _content_type(cls, value: str | None) -> str | None:
        if value is not None and not CONTENT_TYPE.match(value.strip()):
            raise ValueError(f"{value!r} is not a media type such as text/csv or application/pdf")
        return value.strip().lower() if value is not None else None

    @field_validator("content_base64")
    @classmethod
    def _base64(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = "".join(value.split())
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("not base64 (A-Z, a-z, 0-9, + and /, padded with =)") from None
        return value

    @model_validator(mode="after")
    def _one_content(self) -> Self:
        if (self.content is None) == (self.content_base64 is None):
            raise ValueError("give content (text) or content_base64, one of them")
        return self

    def data(self) -> bytes:
        if self.content is not None:
            return self.content.encode()
        return base64.b64decode(self.content_base64 or "")

    def media_type(self) -> tuple[str, str]:
        fallback = "text/plain" if self.content is not None else "application/octet-stream"
        kind = self.content_type or mimetypes.guess_type(self.filename)[0] or fallback
        main, _, sub = kind.partition("/")
        return main, sub


def check_headers(headers: dict[str, str]) -> dict[str, str]:
    for name, value in headers.items():
        if not HEADER_NAME.match(name):
            raise ValueError(f"{name!r} is not a header name (letters, digits, - and _)")
        single_line(value, f"header {name}")
        if name.lower() in RESERVED_HEADERS:
            field = RESERVED_HEADERS[name.lower()]
            how = f"set it with the `{field}` field" if field else "zapflow sets it"
            raise ValueError(f"header {name}: {how}")
    return headers


def message_id(idempotency_key: str, sender: str) -> str:
    """The same for every retry and replay of one step on one event, so a receiver that has
    the message already can tell it is a duplicate."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    domain = sender.rpartition("@")[2] or "zapflow.invalid"
    return f"<{digest}.zapflow@{domain}>"


def add_attachments(msg: EmailMessage, attachments: list[Attachment]) -> None:
    total = 0
    for attachment in attachments:
        data = attachment.data()
        total += len(data)
        if total > MAX_ATTACHMENT_BYTES:
            raise ValueError(
                f"attachments: more than {MAX_ATTACHMENT_BYTES // 2**20} MB in all, more than "
                "most servers accept"
            )
        main, sub = attachment.media_type()
        params = {"charset": "utf-8"} if main == "text" else {}
        msg.add_attachment(data, main, sub, filename=attachment.filename, params=params)


def new_message(text: str | None, html: str | None) -> EmailMessage:
    """A message with the bodies given: multipart/alternative when there are both."""
    msg = EmailMessage(policy=SMTP)
    if text is not None:
        msg.set_content(text)
        if html is not None:
            msg.add_alternative(html, subtype="html")
    elif html is not None:
        msg.set_content(html, subtype="html")
    return msg
