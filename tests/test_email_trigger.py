"""The email app's new_email trigger against a real IMAP server (pymap, in-memory) on loopback:
a customer's mail arrives and the zap gets its sender, subject, bodies and attachments; the
mailbox stays unread; the cursor moves over what was seen; each failure is the right error."""

from __future__ import annotations

import base64
import contextlib
import imaplib
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import trustme
from procs import free_port  # bench's (conftest puts bench/ on the path)

from connectors import registry
from connectors._errors import AuthError, PermanentError, RetryableError
from connectors.email.connection import EmailConnection
from connectors.email.triggers import NewEmailOptions
from flows.loader import load_zap_text

USER = "sales@example.com"
PASSWORD = "imap-" + "pa55" * 6
PDF = b"%PDF-1.4\n" + bytes(range(200))


@dataclass
class ImapServer:
    port: int
    ca: trustme.CA

    def connection(self, **fields: Any) -> EmailConnection:
        values = {
            "imap_host": "127.0.0.1",
            "imap_port": self.port,
            "imap_security": "none",
            "username": USER,
            "password": PASSWORD,
            "timeout": 5,
        }
        return EmailConnection.model_validate(values | fields)

    def deliver(self, *messages: EmailMessage, mailbox: str = "INBOX") -> None:
        """Put messages in the mailbox the way a mail server's delivery does (APPEND)."""
        with imaplib.IMAP4("127.0.0.1", self.port, timeout=5) as imap:
            imap.login(USER, PASSWORD)
            for message in messages:
                imap.append(f'"{mailbox}"', None, None, message.as_bytes())

    def create(self, mailbox: str) -> None:
        with imaplib.IMAP4("127.0.0.1", self.port, timeout=5) as imap:
            imap.login(USER, PASSWORD)
            imap.create(f'"{mailbox}"')

    def seen_flags(self) -> list[bool]:
        with imaplib.IMAP4("127.0.0.1", self.port, timeout=5) as imap:
            imap.login(USER, PASSWORD)
            imap.select("INBOX", readonly=True)
            _, parts = imap.fetch("1:*", "(FLAGS)")
            return [b"\\Seen" in p for p in parts if isinstance(p, bytes)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ImapServer]:
    """pymap's in-memory backend, offering STARTTLS with a certificate of a test CA."""
    folder = tmp_path_factory.mktemp("imap")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    cert.private_key_pem.write_to_path(str(folder / "key.pem"))
    port = free_port()
    pymap = Path(sys.executable).parent / "pymap"
    command = [str(pymap), "--host", "127.0.0.1", "--port", str(port)]
    command += ["--cert", str(folder / "cert.pem"), "--key", str(folder / "key.pem")]
    command += ["dict", "--demo-user", USER, "--demo-password", PASSWORD]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(port)
        yield ImapServer(port, ca)
    finally:
        process.terminate()
        process.wait(10)


@contextlib.contextmanager
def tls_in_front(server: ImapServer) -> Iterator[int]:
    """A TLS port (IMAP's 993 kind) whose connections go on to pymap in plain: pymap itself
    offers STARTTLS only."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.ca.issue_cert("127.0.0.1").configure_cert(context)

    class Relay(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            with (
                context.wrap_socket(self.request, server_side=True) as outside,
                socket.create_connection(("127.0.0.1", server.port)) as inside,
            ):
                threading.Thread(target=_pipe, args=(inside, outside), daemon=True).start()
                _pipe(outside, inside)

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Relay) as relay:
        relay.daemon_threads = True
        threading.Thread(target=relay.serve_forever, daemon=True).start()
        yield relay.server_address[1]
        relay.shutdown()


def _pipe(source: socket.socket, target: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            target.sendall(data)
        target.shutdown(socket.SHUT_WR)


def _wait_for(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                if sock.recv(100).startswith(b"* OK"):
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("pymap did not start")


def mail(
    subject: str, sender: str = "Chan Tai Man <chan@example.com>", **more: Any
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = more.get("to", USER)
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@example.com>"
    msg["Date"] = "Wed, 25 Nov 2026 09:30:00 +0800"
    msg.set_content(more.get("text", f"About: {subject}"))
    if "html" in more:
        msg.add_alternative(more["html"], subtype="html")
    return msg


async def poll(
    conn: EmailConnection, cursor: dict[str, Any] | None = None, **options: Any
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One poll as the engine makes it: the options validated, the payloads checked."""
    trigger = registry.trigger("email", "new_email")
    assert trigger.poll is not None and trigger.options_model is not None
    result = await trigger.poll(conn, trigger.options_model.model_validate(options), cursor)
    for _, payload in result.items:
        trigger.payload_model.model_validate(payload)
    assert result.cursor is not None
    return [payload for _, payload in result.items], result.cursor


async def caught_up(server: ImapServer, mailbox: str = "INBOX", **fields: Any) -> dict[str, Any]:
    """The cursor after a first poll: what a zap knows once it has noted what is there."""
    _, cursor = await poll(server.connection(**fields), mailbox=mailbox)
    return cursor


# --------------------------------------------------------------------------- new mail


async def test_new_mail_starts_the_zap_with_its_fields(server: ImapServer) -> None:
    conn = server.connection()
    cursor = await caught_up(server)
    order = mail(
        "Order 1001: two boxes of oolong",
        text="Please ship to Kowloon.",
        html="<p>Please ship to <b>Kowloon</b>.</p>",
        to="Sales <sales@example.com>, ops@example.com",
    )
    order["Cc"] = "Lee <lee@example.com>"
    order["Reply-To"] = "orders@chan.example.com"
    order["In-Reply-To"] = "<quote-7@example.com>"
    order.add_attachment(PDF, "application", "pdf", filename="po-1001.pdf")
    server.deliver(order)
    (email,), cursor = await poll(conn, cursor)
    assert email["message_id"] == order["Message-ID"]
    assert (email["sender"], email["sender_name"]) == ("chan@example.com", "Chan Tai Man")
    assert email["to"] == ["sales@example.com", "ops@example.com"]
    assert (email["cc"], email["reply_to"]) == (["lee@example.com"], ["orders@chan.example.com"])
    assert email["subject"] == "Order 1001: two boxes of oolong"
    assert email["date"] == "2026-11-25T09:30:00+08:00"
    assert email["in_reply_to"] == "<quote-7@example.com>"
    assert email["text"] == "Please ship to Kowloon.\n"
    assert email["html"] == "<p>Please ship to <b>Kowloon</b>.</p>\n"
    assert email["attachments"] == [
        {
            "filename": "po-1001.pdf",
            "content_type": "application/pdf",
            "size": len(PDF),
            "content_base64": None,
        }
    ]
    assert cursor["last_uid"] == email["uid"]
    assert await poll(conn, cursor) == ([], cursor)  # nothing new since


async def test_the_first_poll_notes_the_latest_mail_and_the_next_sees_only_new(
    server: ImapServer,
) -> None:
    server.deliver(mail("old 1"), mail("old 2"), mail("old 3"))
    conn = server.connection()
    noted, cursor = await poll(conn, max_per_poll=2)
    assert [e["subject"] for e in noted][-2:] == ["old 2", "old 3"]
    assert len(noted) == 2  # the latest max_per_poll, which the engine only notes
    server.deliver(mail("new 1"), mail("new 2"))
    found, _ = await poll(conn, cursor)
    assert [e["subject"] for e in found] == ["new 1", "new 2"]


async def test_a_burst_is_taken_in_order_max_per_poll_at_a_time(server: ImapServer) -> None:
    conn = server.connection()
    cursor = await caught_up(server)
    server.deliver(*(mail(f"burst {i}") for i in range(5)))
    subjects = []
    for _ in range(3):
        found, cursor = await poll(conn, cursor, max_per_poll=2)
        subjects.append([e["subject"] for e in found])
    assert subjects == [["burst 0", "burst 1"], ["burst 2", "burst 3"], ["burst 4"]]


async def test_only_mail_from_a_sender_or_with_a_subject(server: ImapServer) -> None:
    conn = server.connection()
    cursor = await caught_up(server)
    server.deliver(
        mail("Order 1002", sender="Acme Shop <orders@shop.example.com>"),
        mail("Newsletter", sender="Acme Shop <news@shop.example.com>"),
        mail("ORDER 1003", sender="someone@else.example.com"),
    )
    found, after = await poll(
        conn, cursor, from_contains="@SHOP.example.com", subject_contains="order"
    )
    assert [e["subject"] for e in found] == ["Order 1002"]
    assert await poll(conn, after) == ([], after)  # the others are passed over for good


async def test_attachments_come_as_base64_when_asked(server: ImapServer) -> None:
    conn = server.connection()
    cursor = await caught_up(server)
    invoice = mail("Invoice")
    invoice.add_attachment(PDF, "application", "pdf", filename="invoice.pdf")
    server.deliver(invoice)
    (email,), _ = await poll(conn, cursor, include_attachments=True)
    (attachment,) = email["attachments"]
    assert base64.b64decode(attachment["content_base64"]) == PDF
    # … in the shape email.send_email takes, so a zap can forward it
    send = registry.action("email.send_email").input_model
    forward = {"filename": "invoice.pdf", "content_base64": attachment["content_base64"]}
    send.model_validate(
        {"to": "a@example.com", "subject": "Fwd", "text": "", "attachments": [forward]}
    )


async def test_polling_leaves_mail_unread(server: ImapServer) -> None:
    cursor = await caught_up(server)
    server.deliver(mail("Read me"))
    await poll(server.connection(), cursor)
    assert server.seen_flags() and not any(server.seen_flags())


async def test_another_mailbox_and_a_renumbered_one(server: ImapServer) -> None:
    conn = server.connection()
    server.create("Orders 2026")
    server.deliver(mail("filed"), mailbox="Orders 2026")
    found, cursor = await poll(conn, mailbox="Orders 2026")
    assert [e["subject"] for e in found] == ["filed"]
    # the server renumbered the mailbox (UIDVALIDITY changed): the latest are read again,
    # and the engine drops those it has seen by their Message-ID
    stale = {"uidvalidity": cursor["uidvalidity"] + 1, "last_uid": 10**6}
    again, fresh = await poll(conn, stale, mailbox="Orders 2026")
    assert [e["message_id"] for e in again] == [e["message_id"] for e in found]
    assert fresh == cursor


async def test_imap_over_starttls_with_the_servers_ca(server: ImapServer) -> None:
    pem = server.ca.cert_pem.bytes().decode()
    conn = server.connection(imap_security="starttls", ca_certificate=pem)
    cursor = await caught_up(server, imap_security="starttls", ca_certificate=pem)
    server.deliver(mail("over TLS"))
    found, _ = await poll(conn, cursor)
    assert [e["subject"] for e in found] == ["over TLS"]
    untrusted = server.connection(imap_security="starttls")
    with pytest.raises(PermanentError, match="TLS certificate is not trusted"):
        await poll(untrusted)


async def test_imap_over_tls_from_the_start(server: ImapServer) -> None:
    pem = server.ca.cert_pem.bytes().decode()
    with tls_in_front(server) as port:
        fields = {"imap_security": "tls", "imap_port": port, "ca_certificate": pem}
        cursor = await caught_up(server, **fields)
        server.deliver(mail("over implicit TLS"))
        found, _ = await poll(server.connection(**fields), cursor)
    assert [e["subject"] for e in found] == ["over implicit TLS"]


# --------------------------------------------------------------------------- failures


async def test_a_wrong_password_is_an_auth_error_without_the_password(server: ImapServer) -> None:
    conn = server.connection(password="wrong-" + PASSWORD)
    with pytest.raises(AuthError, match=f"refused the login of '{USER}'") as caught:
        await poll(conn)
    assert "AUTHENTICATIONFAILED" in str(caught.value)
    assert PASSWORD not in str(caught.value)


async def test_a_mailbox_that_does_not_exist_fails_for_good(server: ImapServer) -> None:
    with pytest.raises(PermanentError, match="has no mailbox 'Orders' \\(options.mailbox\\)"):
        await poll(server.connection(), mailbox="Orders")


async def test_a_server_that_is_down_or_silent_is_retryable() -> None:
    down = EmailConnection(
        imap_host="127.0.0.1",
        imap_port=free_port(),
        imap_security="none",
        username=USER,
        password=PASSWORD,
    )  # type: ignore[arg-type]
    with pytest.raises(RetryableError, match="could not reach 127.0.0.1"):
        await poll(down)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        mute = down.model_copy(update={"imap_port": silent.getsockname()[1], "timeout": 0.5})
        with pytest.raises(RetryableError, match="did not answer within 0.5 s"):
            await poll(mute)


async def test_a_connection_without_imap_cannot_poll() -> None:
    smtp_only = EmailConnection(host="smtp.example.com")
    with pytest.raises(PermanentError, match="give the zap a connection with an imap_host"):
        await poll(smtp_only)


# --------------------------------------------------------------------------- zap files, check


def test_a_zap_on_new_email_loads_with_its_options() -> None:
    zap = load_zap_text(
        "zap: mail-orders\n"
        "trigger:\n  app: email\n  event: new_email\n  connection: shop\n"
        "  options: {mailbox: INBOX, from_contains: '@shop.example.com', interval: 1m}\n"
        "steps:\n  - id: tell\n    action: builtin.format_text\n"
        "    input: {transform: uppercase, value: '{{ trigger.subject }}'}\n"
    )
    assert zap.trigger.options["from_contains"] == "@shop.example.com"  # type: ignore[index]
    assert NewEmailOptions.model_validate(zap.trigger.options).mailbox == "INBOX"


async def test_the_connection_check_logs_in_to_imap(server: ImapServer) -> None:
    app = registry.app("email")
    assert app.check is not None
    note = await app.check(server.connection(), "shop")
    assert note == f"IMAP 127.0.0.1:{server.port} (none) accepted the login of '{USER}'"
    with pytest.raises(AuthError):
        await app.check(server.connection(password="nope"), "shop")
