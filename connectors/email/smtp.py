"""Talking to the SMTP server (stdlib ``smtplib``, on a worker thread) and turning its failures
into the engine's errors.

Connection refused, timeouts, a dropped link and 4xx replies raise ``RetryableError`` (the step's
retry policy applies); 5xx replies (a recipient rejected, a message refused) raise
``PermanentError`` with the server's own reply; a refused login raises ``AuthError``. Messages
name the server, never the password.
"""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from email.message import EmailMessage

from connectors._errors import AuthError, ConnectorError, PermanentError, RetryableError
from connectors.email.connection import EmailConnection
from connectors.email.links import link_failure, masked


@dataclass(frozen=True)
class Refusal:
    address: str
    code: int
    reply: str


@dataclass(frozen=True)
class Outgoing:
    """One message and its envelope: ``recipients`` holds cc and bcc too."""

    message: EmailMessage
    sender: str
    recipients: list[str]


async def deliver(
    out: Outgoing, conn: EmailConnection, connection_name: str | None
) -> list[Refusal]:
    """Send the message; the recipients the server refused while accepting others."""
    try:
        refused = await asyncio.to_thread(_deliver, out, conn)
    except (smtplib.SMTPException, OSError) as exc:
        raise failure(exc, conn, connection_name) from None
    return [Refusal(addr, code, _text(reply)) for addr, (code, reply) in refused.items()]


async def check(conn: EmailConnection, connection_name: str | None) -> None:
    """Connect, secure the link and log in, as a send would; raise the error a failure calls for."""
    try:
        await asyncio.to_thread(_login_only, conn)
    except (smtplib.SMTPException, OSError) as exc:
        raise failure(exc, conn, connection_name) from None


def _deliver(out: Outgoing, conn: EmailConnection) -> dict[str, tuple[int, bytes]]:
    with _session(conn) as smtp:
        return smtp.send_message(out.message, out.sender, out.recipients)


def _login_only(conn: EmailConnection) -> None:
    with _session(conn) as smtp:
        smtp.noop()


@contextmanager
def _session(conn: EmailConnection) -> Iterator[smtplib.SMTP]:
    """A connected, secured and logged-in session, closed afterwards."""
    smtp: smtplib.SMTP
    if conn.security == "tls":
        smtp = smtplib.SMTP_SSL(
            conn.host, conn.port_number, timeout=conn.timeout, context=conn.ssl_context()
        )
    else:
        smtp = smtplib.SMTP(conn.host, conn.port_number, timeout=conn.timeout)
    try:
        if conn.security == "starttls":
            smtp.ehlo()
            smtp.starttls(context=conn.ssl_context())
        if conn.username:
            smtp.login(conn.username, conn.password.get_secret_value())
        yield smtp
        with suppress(smtplib.SMTPException, OSError):  # the message is sent by now
            smtp.quit()
    finally:
        smtp.close()


def _text(reply: bytes | str) -> str:
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else reply
    return " ".join(text.split())


def failure(exc: BaseException, conn: EmailConnection, name: str | None) -> ConnectorError:
    """The engine's error for what went wrong, its message free of the password."""
    return masked(_classified(exc, conn, name), conn)


def _classified(exc: BaseException, conn: EmailConnection, name: str | None) -> ConnectorError:
    server = conn.server
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return _auth_refused(exc, conn, name)
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return _all_refused(exc.recipients, server)
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return PermanentError(f"{server} does not support it: {exc}. {_NOT_SUPPORTED_HELP}")
    if isinstance(exc, smtplib.SMTPResponseException):
        return _reply_error(f"{server} answered", exc.smtp_code, exc.smtp_error)
    timed_out = isinstance(exc.__context__, TimeoutError)
    if isinstance(exc, smtplib.SMTPServerDisconnected) and not timed_out:
        return RetryableError(f"{server} closed the connection: {exc or 'no reason given'}")
    return link_failure(exc, server, conn.timeout, TLS_HINT)


TLS_HINT = "is security right? tls is usually port 465, starttls 587"
_NOT_SUPPORTED_HELP = (
    "A server offers a login (AUTH) only over TLS: choose security starttls or tls, or leave "
    "username empty for a relay that needs no login"
)


def _auth_refused(
    exc: smtplib.SMTPAuthenticationError, conn: EmailConnection, name: str | None
) -> ConnectorError:
    reply = f"{exc.smtp_code} {_text(exc.smtp_error)}"
    if 400 <= exc.smtp_code < 500:
        return RetryableError(f"{conn.server} could not check the login just now: {reply}")
    rekey = f"zapflow connections rekey email {name}" if name else "zapflow connections rekey"
    return AuthError(
        f"{conn.server} refused the login of {conn.username!r}: {reply}. Re-enter the password "
        f"with `{rekey}`"
    )


def _reply_error(what: str, code: int, reply: bytes | str) -> ConnectorError:
    message = f"{what} {code} {_text(reply)}"
    return PermanentError(message) if code >= 500 else RetryableError(message)


def _all_refused(refused: dict[str, tuple[int, bytes]], server: str) -> ConnectorError:
    detail = "; ".join(f"{addr}: {code} {_text(reply)}" for addr, (code, reply) in refused.items())
    message = f"{server} refused every recipient ({detail})"
    if all(code >= 500 for code, _ in refused.values()):
        return PermanentError(message)
    return RetryableError(message)
