"""Reading new messages from the connection's IMAP server (stdlib ``imaplib``, on a worker
thread): the mailbox is opened read-only and messages are fetched with ``BODY.PEEK``, so
polling never marks mail as read.

A refused login raises ``AuthError``; a mailbox that does not exist ``PermanentError``; a lost
link, a timeout or a server that says BYE ``RetryableError``.
"""

from __future__ import annotations

import asyncio
import imaplib
import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from connectors._errors import AuthError, ConnectorError, PermanentError, RetryableError
from connectors.email.connection import EmailConnection
from connectors.email.links import link_failure, masked

UID = re.compile(rb"\bUID (\d+)")
TLS_HINT = "is imap_security right? tls is usually port 993, starttls 143"


@dataclass(frozen=True)
class Found:
    uidvalidity: int
    messages: list[tuple[int, bytes]]
    """``(uid, raw message)``, oldest first."""


class _LoginRefused(Exception):
    pass


class _NoMailbox(Exception):
    pass


async def fetch_new(
    conn: EmailConnection, mailbox: str, after: tuple[int, int] | None, limit: int, name: str | None
) -> Found:
    """Messages with a UID above ``after = (uidvalidity, last uid)``, at most ``limit``, oldest
    first; without ``after`` (or when the mailbox was renumbered) the latest ``limit``."""
    try:
        return await asyncio.to_thread(_fetch_new, conn, mailbox, after, limit)
    except Exception as exc:
        raise failure(exc, conn, mailbox, name) from None


async def check(conn: EmailConnection, name: str | None) -> None:
    """Connect, secure the link, log in and open INBOX, as a poll would."""
    try:
        await asyncio.to_thread(_fetch_new, conn, "INBOX", None, 0)
    except Exception as exc:
        raise failure(exc, conn, "INBOX", name) from None


def _fetch_new(
    conn: EmailConnection, mailbox: str, after: tuple[int, int] | None, limit: int
) -> Found:
    with _session(conn) as imap:
        status, _ = imap.select(_quoted(mailbox), readonly=True)
        if status != "OK":
            raise _NoMailbox(mailbox)
        uidvalidity = int((imap.response("UIDVALIDITY")[1] or [b"0"])[-1] or 0)
        since = after[1] if after is not None and after[0] == uidvalidity else None
        criteria = f"UID {since + 1}:*" if since is not None else "ALL"
        _, found = imap.uid("SEARCH", criteria)
        uids = sorted(int(uid) for uid in (found[0] or b"").split())
        if since is not None:  # "n:*" names the last message even when its UID is below n
            uids = [uid for uid in uids if uid > since][:limit]
        else:
            uids = uids[-limit:] if limit else []
        return Found(uidvalidity, _fetch(imap, uids))


def _fetch(imap: imaplib.IMAP4, uids: list[int]) -> list[tuple[int, bytes]]:
    if not uids:
        return []
    _, parts = imap.uid("FETCH", ",".join(map(str, uids)), "(UID BODY.PEEK[])")
    found: dict[int, bytes] = {}
    for part in parts:
        if isinstance(part, tuple) and (uid := UID.search(part[0])):
            found[int(uid[1])] = part[1]
    return [(uid, found[uid]) for uid in uids if uid in found]


def _quoted(mailbox: str) -> str:
    return '"' + mailbox.replace("\\", "\\\\").replace('"', '\\"') + '"'


@contextmanager
def _session(conn: EmailConnection) -> Iterator[imaplib.IMAP4]:
    """A connected, secured and logged-in session, logged out afterwards."""
    host, port, timeout = conn.imap_host, conn.imap_port_number, conn.timeout
    imap: imaplib.IMAP4
    if conn.imap_security == "tls":
        imap = imaplib.IMAP4_SSL(host, port, ssl_context=conn.ssl_context(), timeout=timeout)
    else:
        imap = imaplib.IMAP4(host, port, timeout=timeout)
    try:
        if conn.imap_security == "starttls":
            imap.starttls(ssl_context=conn.ssl_context())
        try:
            imap.login(conn.username, conn.password.get_secret_value())
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error as exc:
            raise _LoginRefused(_text(exc)) from None
        yield imap
    finally:
        with suppress(Exception):
            imap.logout()


def _text(exc: BaseException) -> str:
    arg = exc.args[0] if exc.args else exc
    return arg.decode(errors="replace") if isinstance(arg, bytes) else str(arg)


def failure(
    exc: BaseException, conn: EmailConnection, mailbox: str, name: str | None
) -> ConnectorError:
    return masked(_classified(exc, conn, mailbox, name), conn)


def _classified(
    exc: BaseException, conn: EmailConnection, mailbox: str, name: str | None
) -> ConnectorError:
    server = conn.imap_server
    if isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError):
        return link_failure(exc, server, conn.timeout, TLS_HINT)
    if isinstance(exc, _LoginRefused):
        rekey = f"zapflow connections rekey email {name}" if name else "zapflow connections rekey"
        return AuthError(
            f"{server} refused the login of {conn.username!r}: {exc}. Re-enter the password "
            f"with `{rekey}`"
        )
    if isinstance(exc, _NoMailbox):
        return PermanentError(f"{server} has no mailbox {mailbox!r} (options.mailbox)")
    if isinstance(exc, imaplib.IMAP4.abort):
        return RetryableError(f"{server} dropped the connection: {_text(exc)}")
    if isinstance(exc, imaplib.IMAP4.error):
        return PermanentError(f"{server} refused: {_text(exc)}")
    if isinstance(exc, OSError):
        return link_failure(exc, server, conn.timeout, TLS_HINT)
    raise exc
