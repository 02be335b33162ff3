"""The email app's action: send one message through the connection's SMTP server."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from connectors._contract import ActionContext
from connectors._errors import PermanentError, StepInputError
from connectors.email import imap, smtp
from connectors.email._app import app
from connectors.email.addresses import Addresses, OneAddress, addr_spec
from connectors.email.connection import EmailConnection
from connectors.email.message import (
    Attachment,
    add_attachments,
    check_headers,
    message_id,
    new_message,
    single_line,
)

_ADDRESSES_HELP = (
    "one address (chan@example.com or Chan Tai Man <chan@example.com>), a list of them, or "
    "several in one text split by commas"
)


def _subject(value: str) -> str:
    return single_line(value, "a subject")


class SendEmailInput(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    to: Addresses = Field(description=f"Recipients: {_ADDRESSES_HELP}")
    cc: Addresses = Field(default_factory=list, description="Copy recipients, as `to`")
    bcc: Addresses = Field(
        default_factory=list,
        description="Blind copy recipients, as `to`: they get the message, no header names them",
    )
    from_: OneAddress | None = Field(
        None,
        alias="from",
        description="The sender; default: the connection's from_address",
    )
    reply_to: Addresses = Field(
        default_factory=list, description="Where replies go (Reply-To), as `to`"
    )
    subject: Annotated[str, AfterValidator(_subject)] = Field(
        max_length=998, description="The subject line"
    )
    text: str | None = Field(None, description="The plain-text body")
    html: str | None = Field(
        None,
        description="The HTML body; with text too, both are sent (multipart/alternative) and "
        "the reader's mail program shows one",
    )
    attachments: list[Attachment] = Field(
        default_factory=list,
        description="Files to attach, each {filename, content (text) or content_base64, "
        "content_type}",
    )
    headers: Annotated[dict[str, str], AfterValidator(check_headers)] = Field(
        default_factory=dict,
        description="Extra headers, e.g. {In-Reply-To: '<id@example.com>', X-Campaign: "
        "spring}; not those the fields above set",
    )

    @model_validator(mode="after")
    def _body(self) -> Self:
        if self.text is None and self.html is None:
            raise ValueError("give text, html or both (an empty text is fine)")
        if not self.to:
            raise ValueError("to: give at least one recipient")
        return self


class RefusedRecipient(BaseModel):
    address: str = Field(description="The refused address", examples=["nobody@example.com"])
    code: int = Field(description="The server's reply code, e.g. 550", examples=[550])
    reply: str = Field(
        description="The server's reply", examples=["5.1.1 <nobody@example.com>: User unknown"]
    )


class SentEmail(BaseModel):
    message_id: str = Field(
        description="The Message-ID header: the same on every retry and replay of this step "
        "on this event",
        examples=["<3c9f0b7e5a1d4e2f8b6c0a9d7e5f3b1c.zapflow@example.com>"],
    )
    accepted: list[str] = Field(
        description="The recipients (to, cc and bcc) the server accepted",
        examples=[["chan@example.com"]],
    )
    refused: list[RefusedRecipient] = Field(
        description="Recipients the server refused while accepting the others; when it "
        "refuses every one the step fails instead",
        examples=[[]],
    )


def _connection(ctx: ActionContext) -> EmailConnection:
    conn = ctx.connection
    assert isinstance(conn, EmailConnection)
    return conn


def _outgoing(input: SendEmailInput, conn: EmailConnection, ctx: ActionContext) -> smtp.Outgoing:
    if not conn.host:
        raise PermanentError(
            f"connection {ctx.connection_name!r} has no SMTP host: give it one to send mail"
        )
    sender = input.from_ or conn.from_address
    if not sender:
        raise PermanentError(
            f"give the step a `from`, or connection {ctx.connection_name!r} a from_address"
        )
    msg = new_message(input.text, input.html)
    try:
        add_attachments(msg, input.attachments)
    except ValueError as exc:
        raise StepInputError(str(exc)) from None
    msg["Subject"] = input.subject
    msg["From"] = sender
    msg["To"] = ", ".join(input.to)
    for name, values in (("Cc", input.cc), ("Reply-To", input.reply_to)):
        if values:
            msg[name] = ", ".join(values)
    msg["Message-ID"] = message_id(ctx.idempotency_key, addr_spec(sender))
    for name, value in input.headers.items():
        msg[name] = value
    recipients = [addr_spec(a) for a in [*input.to, *input.cc, *input.bcc]]
    return smtp.Outgoing(msg, addr_spec(sender), list(dict.fromkeys(recipients)))


@app.action("send_email", title="Send an email")
async def send_email(input: SendEmailInput, ctx: ActionContext) -> SentEmail:
    """Sends one email through the connection's SMTP server: a plain-text and/or HTML body,
    cc, bcc (delivered, but named in no header), reply-to, attachments and extra headers.

    Connection errors, timeouts and 4xx replies are retried by the step's policy; 5xx replies
    (a recipient or the message refused) fail the step at once with the server's reply; a
    refused login fails at once and asks you to `zapflow connections rekey email NAME`. When
    the server refuses some recipients but accepts others the message is sent and `refused`
    lists them. The Message-ID is the same on every retry of the step for one event.

    Attachments come from earlier steps, as text (`content`: a CSV or JSON a step made, e.g.
    `{{ steps.report.value }}` or `{{ steps.api.body | tojson }}`) or as base64
    (`content_base64`: a file an API answered with). There is no local file path: no step
    writes files, and a path taken from trigger data could mail out any file the server can
    read.
    """
    conn = _connection(ctx)
    out = _outgoing(input, conn, ctx)
    refused = await smtp.deliver(out, conn, ctx.connection_name)
    gone = {r.address for r in refused}
    return SentEmail(
        message_id=str(out.message["Message-ID"]),
        accepted=[r for r in out.recipients if r not in gone],
        refused=[RefusedRecipient(address=r.address, code=r.code, reply=r.reply) for r in refused],
    )


@app.connection_check
async def check(conn: EmailConnection, name: str) -> str:
    """Connect, secure the link and log in, as sending (SMTP) and the trigger (IMAP) do."""
    notes = []
    login = f"accepted the login of {conn.username!r}" if conn.username else "answered (no login)"
    if conn.host:
        await smtp.check(conn, name)
        notes.append(f"{conn.server} ({conn.security}) {login}")
    if conn.imap_host:
        await imap.check(conn, name)
        notes.append(f"IMAP {conn.imap_server} ({conn.imap_security}) {login}")
    return "; ".join(notes)
