"""CINNOX connections against the sandbox, from the command line: `zapflow connect` proves the
credentials with a real call before storing them, `connections rekey` recovers from a regenerated
token, and `zapflow cinnox subscribe` subscribes the event families the zaps need."""

from __future__ import annotations

import asyncio
import textwrap
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from click.testing import Result
from typer.testing import CliRunner

from connectors import registry
from flows import connections
from flows.cli import app

if TYPE_CHECKING:
    from cinnox_sandbox_fixtures import Receiver, Sandbox

pytest_plugins = ["cinnox_sandbox_fixtures"]  # cinnox_sandbox, cinnox_receiver
pytestmark = pytest.mark.usefixtures("prefect_api")
runner = CliRunner()


def unique(prefix: str) -> str:
    """A connection name no other test uses (the Prefect server is shared by the session)."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def zapflow(*args: str) -> Result:
    return runner.invoke(app, list(args))


def connect(sandbox: Sandbox, name: str, token: str | None = None) -> Result:
    return zapflow(
        "connect",
        "cinnox",
        name,
        "--set",
        f"app_id={sandbox.app_id}",
        "--set",
        f"app_token={token or sandbox.token}",
        "--set",
        f"base_url={sandbox.base_url}",
    )


def stored(name: str) -> object | None:
    return asyncio.run(connections.load_block(registry.app("cinnox"), name))


def test_connect_checks_with_a_real_call_then_stores(cinnox_sandbox: Sandbox) -> None:
    name = unique("hk")
    result = connect(cinnox_sandbox, name)
    assert result.exit_code == 0, result.output
    assert "CINNOX answered: 11 staff member(s)" in result.output
    assert f"saved connection cinnox/{name}" in result.output
    assert cinnox_sandbox.token not in result.output
    conn = stored(name)
    assert conn is not None
    assert (conn.app_id, conn.base_url) == (cinnox_sandbox.app_id, cinnox_sandbox.base_url)
    assert conn.app_token.get_secret_value() == cinnox_sandbox.token


def test_connect_counts_the_staff_the_account_sees(cinnox_sandbox: Sandbox) -> None:
    """The check's number comes from CINNOX, not from a constant."""
    cinnox_sandbox.control.emit("new_external_contact")  # contacts are not staff: still 8
    other = cinnox_sandbox.control.add_account("second")
    name = unique("second")
    result = zapflow(
        "connect",
        "cinnox",
        name,
        "--set",
        f"app_id={other['appId']}",
        "--set",
        f"app_token={other['appToken']}",
        "--set",
        f"base_url={cinnox_sandbox.base_url}",
    )
    assert result.exit_code == 0, result.output
    assert "CINNOX answered: 11 staff member(s)" in result.output


@pytest.mark.parametrize(
    "wrong",
    ["token", "app_id"],
)
def test_wrong_credentials_are_refused_and_not_stored(cinnox_sandbox: Sandbox, wrong: str) -> None:
    name = unique("wrong")
    bad_token = "not-the-token-" + "x" * 40
    app_id = cinnox_sandbox.app_id if wrong == "token" else "0" * 32
    token = bad_token if wrong == "token" else cinnox_sandbox.token
    result = zapflow(
        "connect",
        "cinnox",
        name,
        "--set",
        f"app_id={app_id}",
        "--set",
        f"app_token={token}",
        "--set",
        f"base_url={cinnox_sandbox.base_url}",
    )
    assert result.exit_code == 1
    assert f"CINNOX did not accept connection {name!r}" in result.output
    assert "rejected the App Token" in result.output
    assert token not in result.output
    assert "saved connection" not in result.output
    assert stored(name) is None


def test_connect_to_nothing_is_refused_and_not_stored(cinnox_sandbox: Sandbox) -> None:
    from connectors._loopback import bind

    sock = bind()
    port = sock.getsockname()[1]
    sock.close()
    name = unique("nowhere")
    result = zapflow(
        "connect",
        "cinnox",
        name,
        "--set",
        f"app_id={cinnox_sandbox.app_id}",
        "--set",
        f"app_token={cinnox_sandbox.token}",
        "--set",
        f"base_url=http://127.0.0.1:{port}",
    )
    assert result.exit_code == 1
    assert "could not reach CINNOX" in result.output
    assert stored(name) is None


def test_rekey_after_regenerate(cinnox_sandbox: Sandbox) -> None:
    name = unique("rotated")
    assert connect(cinnox_sandbox, name).exit_code == 0
    fresh = cinnox_sandbox.control.regenerate_token(cinnox_sandbox.app_id)["appToken"]

    # a wrong new token is checked and refused too; the stored one stays
    rekeyed_wrong = zapflow("connections", "rekey", "cinnox", name, "--set", "app_token=nope")
    assert rekeyed_wrong.exit_code == 1
    assert f"CINNOX did not accept connection {name!r}" in rekeyed_wrong.output
    assert "rejected the App Token" in rekeyed_wrong.output
    assert stored(name).app_token.get_secret_value() == cinnox_sandbox.token

    rekeyed = zapflow("connections", "rekey", "cinnox", name, "--set", f"app_token={fresh}")
    assert rekeyed.exit_code == 0, rekeyed.output
    assert "CINNOX answered: 11 staff member(s)" in rekeyed.output
    assert f"re-keyed cinnox/{name}" in rekeyed.output
    assert fresh not in rekeyed.output and cinnox_sandbox.token not in rekeyed.output
    conn = stored(name)
    assert conn.app_token.get_secret_value() == fresh
    assert (conn.app_id, conn.base_url) == (cinnox_sandbox.app_id, cinnox_sandbox.base_url)


def test_a_refused_check_names_the_connection(cinnox_sandbox: Sandbox) -> None:
    name = unique("named")
    assert connect(cinnox_sandbox, name).exit_code == 0
    result = zapflow("connections", "rekey", "cinnox", name, "--set", "app_token=nope")
    assert result.exit_code == 1
    output = result.output.replace("\n", "")
    assert f"connection {cinnox_sandbox.app_id!r}" not in output
    assert f"`zapflow connections rekey cinnox {name}`" in output


# --------------------------------------------------------------------------- subscriptions


def write_zaps(folder: Path, connection: str, *, enabled: bool = True) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "missed.yaml").write_text(
        textwrap.dedent(f"""\
        zap: missed-follow-up
        enabled: {str(enabled).lower()}
        trigger: {{app: cinnox, event: missed_enquiry, connection: {connection}}}
        steps:
          - id: detail
            action: cinnox.get_enquiry_detail
            input: {{display_case_number: "{{{{ trigger.displayCaseNumber }}}}"}}
        """),
        encoding="utf-8",
    )
    return folder


def test_subscribe_and_unsubscribe_the_families_zaps_need(
    cinnox_sandbox: Sandbox, cinnox_receiver: Receiver, tmp_path: Path
) -> None:
    name = unique("events")
    assert connect(cinnox_sandbox, name).exit_code == 0
    zaps = write_zaps(tmp_path / "zaps", name)
    hook = cinnox_receiver.hook()

    result = zapflow("cinnox", "subscribe", name, "--url", hook, "--zaps", str(zaps))
    assert result.exit_code == 0, result.output
    # each family gets its own URL under the hook base: HOOK_BASE/<family>
    assert f"inquiry: subscribed → {hook}/inquiry  (zaps: missed-follow-up)" in result.output
    assert cinnox_receiver.of(hook).challenges == 1  # CINNOX verified the URL first
    [subscription] = cinnox_sandbox.control.subscriptions()
    assert (subscription["appId"], subscription["family"], subscription["url"]) == (
        cinnox_sandbox.app_id,
        "inquiry",
        f"{hook}/inquiry",
    )

    # subscribed for real: an enquiry event now reaches the receiver
    emitted = cinnox_sandbox.control.emit("missed_enquiry")
    assert cinnox_receiver.wait(hook) == [emitted["event"]]

    off = zapflow("cinnox", "subscribe", name, "--url", hook, "--zaps", str(zaps), "--off")
    assert off.exit_code == 0, off.output
    assert f"inquiry: unsubscribed → {hook}/inquiry" in off.output
    assert cinnox_sandbox.control.subscriptions() == []
    assert cinnox_sandbox.control.emit("missed_enquiry")["deliveries"] == []


def test_subscribe_is_refused_when_the_url_fails_verification(
    cinnox_sandbox: Sandbox, cinnox_receiver: Receiver, tmp_path: Path
) -> None:
    name = unique("badhook")
    assert connect(cinnox_sandbox, name).exit_code == 0
    zaps = write_zaps(tmp_path / "zaps", name)
    hook = cinnox_receiver.hook(challenge="wrong")
    result = zapflow("cinnox", "subscribe", name, "--url", hook, "--zaps", str(zaps))
    assert result.exit_code == 1
    assert "url verification failed" in result.output
    assert cinnox_sandbox.control.subscriptions() == []


def test_subscribe_needs_an_enabled_zap_on_that_connection(
    cinnox_sandbox: Sandbox, cinnox_receiver: Receiver, tmp_path: Path
) -> None:
    name = unique("idle")
    assert connect(cinnox_sandbox, name).exit_code == 0
    hook = cinnox_receiver.hook()
    disabled = write_zaps(tmp_path / "disabled", name, enabled=False)
    other = write_zaps(tmp_path / "other", unique("other"))
    for zaps in (disabled, other):
        result = zapflow("cinnox", "subscribe", name, "--url", hook, "--zaps", str(zaps))
        assert result.exit_code == 0, result.output
        assert f"no enabled zap in {zaps}/ is triggered by cinnox connection {name!r}" in (
            result.output.replace("\n", "")
        )
    assert cinnox_receiver.of(hook).challenges == 0
    assert cinnox_sandbox.control.subscriptions() == []


def test_subscribe_with_a_regenerated_token_says_to_rekey(
    cinnox_sandbox: Sandbox, cinnox_receiver: Receiver, tmp_path: Path
) -> None:
    name = unique("stale")
    assert connect(cinnox_sandbox, name).exit_code == 0
    zaps = write_zaps(tmp_path / "zaps", name)
    cinnox_sandbox.control.regenerate_token(cinnox_sandbox.app_id)
    result = zapflow(
        "cinnox", "subscribe", name, "--url", cinnox_receiver.hook(), "--zaps", str(zaps)
    )
    assert result.exit_code == 1
    assert f"zapflow connections rekey cinnox {name}" in result.output
    assert cinnox_sandbox.token not in result.output
    assert cinnox_sandbox.control.subscriptions() == []
