from __future__ import annotations

from connectors._contract import App
from connectors.email.connection import SmtpConnection

app = App(
    "email",
    title="Email (SMTP)",
    description=(
        "Send email through any SMTP server: plain text and/or HTML, cc and bcc, reply-to, "
        "attachments from earlier steps and extra headers, over STARTTLS, implicit TLS or a "
        "plain connection."
    ),
    connection=SmtpConnection,
)
