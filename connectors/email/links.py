"""What SMTP and IMAP share: turning a failed link (TLS, timeout, refused connection) into the
engine's error, and keeping the password out of every message."""

from __future__ import annotations

import ssl

from connectors._errors import ConnectorError, PermanentError, RetryableError
from connectors.email.connection import EmailConnection

MASK = "********"


def link_failure(exc: BaseException, server: str, timeout: float, tls_hint: str) -> ConnectorError:
    """The error for a link that failed below the mail protocol."""
    if isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError):
        # smtplib and imaplib report a reply that never came as a lost connection
        return RetryableError(f"{server} did not answer within {timeout:g} s")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return PermanentError(
            f"{server}'s TLS certificate is not trusted ({exc.verify_message}): give the "
            "connection its CA in ca_certificate, or set verify_certificate false"
        )
    if isinstance(exc, ssl.SSLError):
        return RetryableError(f"TLS with {server} failed ({exc.reason or exc}); {tls_hint}")
    return RetryableError(f"could not reach {server} ({type(exc).__name__}: {exc})")


def masked(error: ConnectorError, conn: EmailConnection) -> ConnectorError:
    """``error``, or the same error with the connection's password masked."""
    password = conn.password.get_secret_value()
    if password and password in str(error):
        return type(error)(str(error).replace(password, MASK))
    return error
