"""The email app against a real SMTP server (aiosmtpd) on loopback: what a user relies on when a
message goes out (bodies, cc and bcc, attachments, a login over STARTTLS or implicit TLS), each
kind of failure turned into the error class that tells the engine what to do next, and the
password kept out of errors and reprs."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from procs import free_port  # bench's (conftest puts bench/ on the path)
from pydantic import ValidationError

from connectors import ActionContext, registry
from connectors._errors import AuthError, PermanentError, RetryableError
from connectors.email.connection import EmailConnection

USERNAME = "zaps@example.com"
PASSWORD = "pa55-" + "w0rd" * 5
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))


# --------------------------------------------------------------------------- the SMTP server


@dataclass
class Delivered:
    sender: str
    recipients: list[str]
    message: EmailMessage
    login: str | None
    tls: bool


@dataclass
class Mailbox:
    """An aiosmtpd handler that keeps what it receives and refuses as the address says:
    ``nobody@`` is unknown (550), ``busy@`` is a full mailbox for now (452), a subject with
    SPAM is refused (554), one with SLOW makes the server wait before answering."""

    delivered: list[Delivered] = field(default_factory=list)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address.startswith("nobody@"):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if address.startswith("busy@"):
            return "452 4.2.2 Mailbox full, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        # the wire has CRLF line ends; binary parts are base64, so this changes text only
        message = message_from_bytes(envelope.content.replace(b"\r\n", b"\n"), policy=default)
        assert isinstance(message, EmailMessage)
        if "SPAM" in str(message["Subject"]):
            return "554 5.7.1 Message rejected: looks like spam"
        login = session.auth_data.login.decode() if session.auth_data else None
        tls = session.ssl is not None or server.transport.get_extra_info("sslcontext") is not None
        assert envelope.mail_from is not None
        self.delivered.append(
            Delivered(envelope.mail_from, list(envelope.rcpt_tos), message, login, tls)
        )
        return "250 2.0.0 Message accepted for delivery"


def authenticator(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    good = isinstance(data, LoginPassword) and data == (USERNAME.encode(), PASSWORD.encode())
    return AuthResult(success=good, handled=False, auth_data=data if good else None)


@dataclass
class Servers:
    mailbox: Mailbox
    ca: trustme.CA
    plain: int
    """No login, no TLS: a relay on your own network."""
    starttls: int
    """STARTTLS required, then a login."""
    tls: int
    """TLS from the start, then a login."""

    def connection(self, **fields: Any) -> EmailConnection:
        values = {"host": "127.0.0.1", "port": self.plain, "security": "none"}
        if fields.get("security") in ("starttls", "tls"):
            values |= {
                "port": getattr(self, fields["security"]),
                "username": USERNAME,
                "password": PASSWORD,
                "ca_certificate": self.ca.cert_pem.bytes().decode(),
            }
        values |= {"from_address": "Zaps <zaps@example.com>", "timeout": 5}
        return EmailConnection.model_validate(values | fields)


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    ca = trustme.CA()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(tls)
    mailbox = Mailbox()
    ports = [free_port() for _ in range(3)]
    common: dict[str, Any] = {"hostname": "127.0.0.1", "authenticator": authenticator}
    controllers = [
        Controller(mailbox, port=ports[0], hostname="127.0.0.1"),
        Controller(
            mailbox,
            port=ports[1],
            tls_context=tls,
            require_starttls=True,
            auth_required=True,
            **common,
        ),
        # aiosmtpd knows TLS only as STARTTLS: tell it this link is TLS from the start
        Controller(mailbox, port=ports[2], ssl_context=tls, auth_require_tls=False, **common),
    ]
    for controller in controllers:
        controller.start()
    try:
        yield Servers(mailbox, ca, *ports)
    finally:
        for controller in controllers:
            controller.stop()


@pytest.fixture
def mailbox(servers: Servers) -> Mailbox:
    servers.mailbox.delivered.clear()
    return servers.mailbox


# --------------------------------------------------------------------------- helpers


def context(conn: EmailConnection, event_id: str | None = None) -> ActionContext:
    return ActionContext(
        zap_id="orders",
        step_id="mail",
        run_id="r",
        event_id=event_id or uuid.uuid4().hex,
        connection=conn,
        connection_name="office",
    )


async def send(data: dict[str, Any], conn: EmailConnection, event_id: str | None = None) -> Any:
    """Run ``email.send_email`` as the engine does: validate the input, then run the action."""
    action = registry.action("email.send_email")
    out = await action.run(action.input_model.model_validate(data), context(conn, event_id))
    assert isinstance(out, action.output_model)
    return out


def bodies(message: EmailMessage) -> dict[str, str]:
    return {
        part.get_content_type(): part.get_content()
        for part in message.walk()
        if part.get_content_maintype() == "text" and not part.get_filename()
    }


ORDER = {"to": "Chan Tai Man <chan@example.com>", "subject": "Your order 1001 has shipped"}


# --------------------------------------------------------------------------- sending


async def test_a_plain_text_email_reaches_the_recipient(servers: Servers, mailbox: Mailbox) -> None:
    out = await send(
        {**ORDER, "text": "Hello Chan,\nyour parcel is on its way."}, servers.connection()
    )
    (got,) = mailbox.delivered
    assert got.sender == "zaps@example.com"
    assert got.recipients == ["chan@example.com"]
    assert got.message["From"] == "Zaps <zaps@example.com>"
    assert got.message["To"] == "Chan Tai Man <chan@example.com>"
    assert got.message["Subject"] == "Your order 1001 has shipped"
    assert got.message.get_content_type() == "text/plain"
    assert got.message.get_content() == "Hello Chan,\nyour parcel is on its way.\n"
    assert out.accepted == ["chan@example.com"] and out.refused == []
    assert got.message["Message-ID"] == out.message_id
    assert json.loads(json.dumps(out.model_dump(mode="json")))  # plain JSON for later steps


async def test_an_html_email(servers: Servers, mailbox: Mailbox) -> None:
    await send({**ORDER, "html": "<p>Hello <b>Chan</b></p>"}, servers.connection())
    message = mailbox.delivered[0].message
    assert message.get_content_type() == "text/html"
    assert bodies(message) == {"text/html": "<p>Hello <b>Chan</b></p>\n"}


async def test_text_and_html_are_sent_as_alternatives(servers: Servers, mailbox: Mailbox) -> None:
    await send({**ORDER, "text": "Hello Chan", "html": "<p>Hello Chan</p>"}, servers.connection())
    message = mailbox.delivered[0].message
    assert message.get_content_type() == "multipart/alternative"
    assert bodies(message) == {"text/plain": "Hello Chan\n", "text/html": "<p>Hello Chan</p>\n"}


async def test_cc_and_bcc_are_delivered_but_bcc_is_in_no_header(
    servers: Servers, mailbox: Mailbox
) -> None:
    out = await send(
        {
            **ORDER,
            "text": "Shipped.",
            "cc": "Lee Siu Ming <lee@example.com>, wong@example.com",
            "bcc": ["audit@example.com"],
            "reply_to": "Support <support@example.com>",
            "from": "Orders <orders@example.com>",
        },
        servers.connection(),
    )
    (got,) = mailbox.delivered
    everyone = ["chan@example.com", "lee@example.com", "wong@example.com", "audit@example.com"]
    assert got.recipients == everyone and out.accepted == everyone
    assert got.message["Cc"] == "Lee Siu Ming <lee@example.com>, wong@example.com"
    assert got.message["Reply-To"] == "Support <support@example.com>"
    assert (got.sender, got.message["From"]) == (
        "orders@example.com",
        "Orders <orders@example.com>",
    )
    assert "Bcc" not in got.message
    assert b"audit@" not in got.message.as_bytes()


async def test_attachments_from_text_and_from_base64(servers: Servers, mailbox: Mailbox) -> None:
    await send(
        {
            **ORDER,
            "text": "Your invoice and label are attached.",
            "attachments": [
                {"filename": "invoice.csv", "content": "item,qty\nTea 茶,2\n"},
                {"filename": "label.png", "content_base64": base64.b64encode(PNG).decode()},
                {
                    "filename": "order.json",
                    "content": '{"id": 1001}',
                    "content_type": "application/json",
                },
            ],
        },
        servers.connection(),
    )
    message = mailbox.delivered[0].message
    assert message.get_content_type() == "multipart/mixed"
    assert bodies(message) == {"text/plain": "Your invoice and label are attached.\n"}
    files = {a.get_filename(): a for a in message.iter_attachments()}
    assert {n: a.get_content_type() for n, a in files.items()} == {
        "invoice.csv": "text/csv",
        "label.png": "image/png",
        "order.json": "application/json",
    }
    assert files["invoice.csv"].get_content() == "item,qty\nTea 茶,2\n"
    assert files["label.png"].get_content() == PNG
    assert files["order.json"].get_content() == b'{"id": 1001}'


async def test_extra_headers_are_sent(servers: Servers, mailbox: Mailbox) -> None:
    headers = {"In-Reply-To": "<abc@example.com>", "X-Campaign": "spring sale"}
    await send({**ORDER, "text": "Re: your question", "headers": headers}, servers.connection())
    message = mailbox.delivered[0].message
    assert (message["In-Reply-To"], message["X-Campaign"]) == ("<abc@example.com>", "spring sale")


async def test_non_ascii_names_and_subjects_arrive_intact(
    servers: Servers, mailbox: Mailbox
) -> None:
    data = {"to": "陳大文 <chan@example.com>", "subject": "訂單 1001 已發貨", "text": "你好"}
    await send(data, servers.connection())
    message = mailbox.delivered[0].message
    assert (message["To"], message["Subject"]) == ("陳大文 <chan@example.com>", "訂單 1001 已發貨")
    assert message.get_content() == "你好\n"


async def test_a_retry_of_the_same_step_sends_the_same_message_id(
    servers: Servers, mailbox: Mailbox
) -> None:
    event = uuid.uuid4().hex
    first = await send({**ORDER, "text": "x"}, servers.connection(), event)
    again = await send({**ORDER, "text": "x"}, servers.connection(), event)
    other = await send({**ORDER, "text": "x"}, servers.connection())
    assert first.message_id == again.message_id != other.message_id
    assert first.message_id.endswith("@example.com>")


# --------------------------------------------------------------------------- login and TLS


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_a_login_over_tls_with_the_servers_own_ca(
    servers: Servers, mailbox: Mailbox, security: str
) -> None:
    out = await send({**ORDER, "text": "over TLS"}, servers.connection(security=security))
    (got,) = mailbox.delivered
    assert (got.login, got.tls) == (USERNAME, True)
    assert out.accepted == ["chan@example.com"]


async def test_the_ca_may_be_given_as_a_file(
    servers: Servers, mailbox: Mailbox, tmp_path: Path
) -> None:
    pem = tmp_path / "ca.pem"
    servers.ca.cert_pem.write_to_path(str(pem))
    await send({**ORDER, "text": "x"}, servers.connection(security="tls", ca_certificate=str(pem)))
    assert mailbox.delivered[0].tls


async def test_a_self_signed_server_is_refused_unless_trusted(
    servers: Servers, mailbox: Mailbox
) -> None:
    untrusted = servers.connection(security="starttls", ca_certificate="")
    with pytest.raises(PermanentError, match="TLS certificate is not trusted.*ca_certificate"):
        await send({**ORDER, "text": "x"}, untrusted)
    anything = servers.connection(security="starttls", ca_certificate="", verify_certificate=False)
    await send({**ORDER, "text": "x"}, anything)
    assert len(mailbox.delivered) == 1


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_a_wrong_password_is_an_auth_error_without_the_password(
    servers: Servers, security: str
) -> None:
    conn = servers.connection(security=security, password="wrong-" + PASSWORD)
    with pytest.raises(AuthError) as caught:
        await send({**ORDER, "text": "x"}, conn)
    message = str(caught.value)
    assert f"refused the login of '{USERNAME}': 535" in message
    assert "zapflow connections rekey email office" in message
    assert PASSWORD not in message and PASSWORD not in repr(conn)


async def test_a_login_without_tls_is_refused_with_advice(servers: Servers) -> None:
    conn = servers.connection(
        security="none", port=servers.starttls, username=USERNAME, password=PASSWORD
    )
    with pytest.raises(PermanentError, match="choose security starttls or tls"):
        await send({**ORDER, "text": "x"}, conn)


async def test_tls_to_a_plain_port_is_retryable_with_a_hint(servers: Servers) -> None:
    conn = servers.connection(security="tls", port=servers.plain)
    with pytest.raises(RetryableError, match="is security right"):
        await send({**ORDER, "text": "x"}, conn)


# --------------------------------------------------------------------------- refusals


async def test_a_rejected_recipient_fails_for_good_with_the_servers_reply(
    servers: Servers, mailbox: Mailbox
) -> None:
    with pytest.raises(PermanentError) as caught:
        await send({**ORDER, "to": "nobody@example.com", "text": "x"}, servers.connection())
    assert not isinstance(caught.value, AuthError)
    assert "refused every recipient (nobody@example.com: 550 5.1.1" in str(caught.value)
    assert "User unknown" in str(caught.value)
    assert mailbox.delivered == []


async def test_a_full_mailbox_for_now_is_retryable(servers: Servers) -> None:
    with pytest.raises(RetryableError, match="busy@example.com: 452 4.2.2 Mailbox full"):
        await send({**ORDER, "to": "busy@example.com", "text": "x"}, servers.connection())


async def test_some_recipients_refused_the_others_get_it(
    servers: Servers, mailbox: Mailbox
) -> None:
    data = {**ORDER, "cc": ["nobody@example.com"], "text": "x"}
    out = await send(data, servers.connection())
    assert out.accepted == ["chan@example.com"]
    (refused,) = out.refused
    assert (refused.address, refused.code) == ("nobody@example.com", 550)
    assert "User unknown" in refused.reply
    assert mailbox.delivered[0].recipients == ["chan@example.com"]


async def test_a_refused_message_fails_for_good(servers: Servers) -> None:
    with pytest.raises(PermanentError, match="answered 554 5.7.1 Message rejected: looks like"):
        await send({**ORDER, "subject": "SPAM offer", "text": "x"}, servers.connection())


# --------------------------------------------------------------------------- unreachable


async def test_a_server_that_is_down_is_retryable() -> None:
    conn = EmailConnection(host="127.0.0.1", port=free_port(), security="none", timeout=2)
    with pytest.raises(RetryableError, match=r"could not reach 127.0.0.1:\d+ \(ConnectionRefused"):
        await send({**ORDER, "from": "zaps@example.com", "text": "x"}, conn)


async def test_a_server_that_never_answers_times_out_retryably() -> None:
    with socket.socket() as silent:  # accepts connections (the backlog) and never greets
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        conn = EmailConnection(host="127.0.0.1", port=port, security="none", timeout=0.5)
        with pytest.raises(RetryableError, match=r"did not answer within 0.5 s"):
            await send({**ORDER, "from": "zaps@example.com", "text": "x"}, conn)


# --------------------------------------------------------------------------- input


def problems(data: dict[str, Any]) -> list[tuple[str, str]]:
    action = registry.action("email.send_email")
    with pytest.raises(ValidationError) as caught:
        action.input_model.model_validate(data)
    return [
        (".".join(map(str, e["loc"])), e["msg"]) for e in caught.value.errors(include_url=False)
    ]


@pytest.mark.parametrize(
    ("data", "where", "says"),
    [
        ({"to": "chan.example.com"}, "to", "'chan.example.com' is not an email address"),
        ({"cc": ["lee@example.com", "wong@"]}, "cc", "'wong@' is not an email address"),
        ({"from": "a@example.com, b@example.com"}, "from", "give one address, got 2"),
        ({"subject": "one\nBcc: x@evil.example"}, "subject", "may not contain line breaks"),
        ({"headers": {"Bcc": "x@example.com"}}, "headers", "set it with the `bcc` field"),
        ({"headers": {"Message-ID": "<x@y>"}}, "headers", "zapflow sets it"),
        ({"headers": {"X-Tag": "a\r\nb"}}, "headers", "may not contain line breaks"),
        ({"text": None}, "", "give text, html or both"),
        ({"attachments": [{"filename": "a.txt"}]}, "attachments.0", "give content (text) or"),
        (
            {"attachments": [{"filename": "a.pdf", "content_base64": "%%%"}]},
            "attachments.0.content_base64",
            "not base64",
        ),
        (
            {"attachments": [{"filename": "../etc/passwd", "content": "x"}]},
            "attachments.0.filename",
            "not a path",
        ),
        (
            {"attachments": [{"filename": "a", "content": "x", "content_type": "pdf"}]},
            "attachments.0.content_type",
            "is not a media type",
        ),
    ],
)
def test_bad_input_names_the_field_and_what_is_allowed(
    data: dict[str, Any], where: str, says: str
) -> None:
    found = problems({**ORDER, "text": "x", **data})
    assert any(loc == where and says in msg for loc, msg in found), found


async def test_a_connection_that_only_reads_mail_cannot_send() -> None:
    conn = EmailConnection(imap_host="imap.example.com", username="chan", password="pw")  # type: ignore[arg-type]
    with pytest.raises(PermanentError, match="connection 'office' has no SMTP host"):
        await send({**ORDER, "text": "x"}, conn)


async def test_a_step_without_from_needs_the_connections_from_address(servers: Servers) -> None:
    conn = servers.connection(from_address="")
    with pytest.raises(PermanentError, match="give the step a `from`, or connection 'office'"):
        await send({**ORDER, "text": "x"}, conn)


def test_a_connection_names_what_is_wrong_and_takes_empty_answers_as_defaults() -> None:
    given = {"host": "smtp.example.com", "port": "", "timeout": "", "verify_certificate": ""}
    conn = EmailConnection.model_validate(given | {"security": "tls"})
    assert (conn.port_number, conn.timeout, conn.verify_certificate) == (465, 30, True)
    with pytest.raises(ValidationError, match="a password needs a username"):
        EmailConnection(host="smtp.example.com", password=PASSWORD)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="give a host \\(SMTP, to send\\), an imap_host"):
        EmailConnection(username="chan")
    with pytest.raises(ValidationError, match="imap_host\\) needs a username"):
        EmailConnection(imap_host="imap.example.com")
    with pytest.raises(ValidationError, match="is not a host name"):
        EmailConnection(host="smtp://smtp.example.com")
    with pytest.raises(ValidationError, match="PEM text"):
        EmailConnection(host="smtp.example.com", ca_certificate="/no/such/ca.pem")


# --------------------------------------------------------------------------- connection check


async def test_the_connection_check_logs_in(servers: Servers) -> None:
    app = registry.app("email")
    assert app.check is not None
    note = await app.check(servers.connection(security="starttls"), "office")
    assert note == f"127.0.0.1:{servers.starttls} (starttls) accepted the login of '{USERNAME}'"
    with pytest.raises(AuthError):
        await app.check(servers.connection(security="tls", password="nope"), "office")


# --------------------------------------------------------------------------- real zap runs

MAIL_ZAP = """\
zap: {zap_id}
trigger:
  app: builtin
  event: catch_hook
defaults:
  retries: 2
  retry_delay: 0.05s
  retry_jitter: 0
steps:
  - id: mail
    action: email.send_email
    connection: office
    input:
      to: "{{{{ trigger.customer }}}} <{{{{ trigger.email }}}}>"
      bcc: audit@example.com
      subject: "Order {{{{ trigger.id }}}} has shipped"
      text: "Hello {{{{ trigger.customer }}}}"
"""


def run_zap(zap_id: str, payload: dict[str, Any]) -> Any:
    from flows.compiler import run_with_history
    from flows.events import Event
    from flows.loader import load_zap_text

    zap = load_zap_text(MAIL_ZAP.format(zap_id=zap_id))
    event = Event(app="builtin", trigger="catch_hook", payload=payload)
    return asyncio.run(run_with_history(zap, event))


def history(flow_run_id: Any) -> tuple[dict[str, Any], str]:
    """The run's task runs by name, and what the server holds about the run as text."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )

    async def read() -> tuple[dict[str, Any], str]:
        async with get_client() as client:
            flow_run = await client.read_flow_run(flow_run_id)
            tasks = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            states = [s for t in tasks for s in await client.read_task_run_states(t.id)]
            logs = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
            )
        parts = [flow_run.model_dump_json(), *(t.model_dump_json() for t in tasks)]
        parts += [s.model_dump_json() for s in states] + [log.message for log in logs]
        return {t.name: t for t in tasks}, json.dumps(parts)

    return asyncio.run(read())


@pytest.mark.usefixtures("prefect_api")
def test_a_zap_sends_mail_and_a_refused_login_stops_it_without_the_password(
    servers: Servers, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection from the environment (STARTTLS, a login). The first run delivers; after
    the password changes, the run fails at once (no retries) asking for a rekey. The password
    is nowhere in either run's history."""
    from flows import connections

    prefix = "ZAPFLOW_EMAIL_OFFICE_"
    settings = {"HOST": "127.0.0.1", "PORT": str(servers.starttls), "SECURITY": "starttls"}
    settings |= {"USERNAME": USERNAME, "PASSWORD": PASSWORD, "FROM_ADDRESS": "zaps@example.com"}
    settings |= {"CA_CERTIFICATE": servers.ca.cert_pem.bytes().decode()}
    for field_name, value in settings.items():
        monkeypatch.setenv(prefix + field_name, value)
    connections.forget("email", "office")
    payload = {"id": "1001", "customer": "Chan Tai Man", "email": "chan@example.com"}
    state = run_zap(f"mail-{uuid.uuid4().hex[:6]}", payload)
    assert state.is_completed(), state.message
    (got,) = mailbox.delivered
    assert got.recipients == ["chan@example.com", "audit@example.com"] and got.login == USERNAME
    assert got.message["To"] == "Chan Tai Man <chan@example.com>"

    monkeypatch.setenv(prefix + "PASSWORD", "changed-" + PASSWORD)
    connections.forget("email", "office")
    failed = run_zap(f"mail-{uuid.uuid4().hex[:6]}", payload)
    assert failed.is_failed() and "connections rekey email office" in failed.message
    tasks, text = history(failed.state_details.flow_run_id)
    assert tasks["mail"].run_count == 1  # an AuthError is not retried
    _, sent = history(state.state_details.flow_run_id)
    for recorded in (text, sent, failed.message):
        assert PASSWORD not in recorded
