from __future__ import annotations

from connectors._contract import App
from connectors.email.connection import EmailConnection

app = App(
    "email",
    title="Email (SMTP, IMAP)",
    description=(
        "Send email through any SMTP server (plain text and/or HTML, cc and bcc, reply-to, "
        "attachments from earlier steps, extra headers) and start zaps on new mail in an IMAP "
        "mailbox; over STARTTLS, TLS from the start, or a plain connection."
    ),
    connection=EmailConnection,
)
