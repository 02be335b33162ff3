"""`zapflow cinnox subscribe` gives each event family its own URL under the connection's hook
base, and `zapflow cinnox subscriptions` reads back what CINNOX has and warns where it is wrong.

Real HTTP on loopback throughout: the CINNOX sandbox (subscriptions, the URL challenge,
deliveries) and zapflow's own receiver with an inbox, which reads each delivery by the family
its URL ends in."""

from __future__ import annotations

import asyncio
import re
import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import uvicorn
from click.testing import Result
from typer.testing import CliRunner

from connectors.cinnox import wire
from flows.cli import app as cli
from flows.intake.inbox import Inbox
from flows.intake.receiver import AppHook, Hooks, create_app

if TYPE_CHECKING:
    from cinnox_sandbox_fixtures import Receiver, Sandbox

pytest_plugins = ["cinnox_sandbox_fixtures"]
runner = CliRunner()
NAME = "hk"
TRIGGERS = {  # one zap per family, all on connection NAME
    "external-contact": "new_external_contact",
    "label": "label_created",
    "outbound-sms": "sms_delivery_receipt",
    "inquiry": "new_enquiry",
}
FAMILIES = sorted(TRIGGERS)


@dataclass
class Running:
    url: str
    inbox: Inbox
    inbox_url: str
    token: str

    @property
    def base(self) -> str:
        """The connection's hook base, as `zapflow serve` prints it without /<channel>."""
        return f"{self.url}/hooks/cinnox/{NAME}/{self.token}"


@pytest.fixture
async def receiver(tmp_path: Path) -> AsyncIterator[Running]:
    """zapflow's receiver serving the hook of cinnox connection NAME, its token from the inbox
    (as `zapflow serve` does)."""
    inbox_url = f"sqlite+aiosqlite:///{tmp_path / 'inbox.db'}"
    inbox = await Inbox.open(inbox_url)
    token = await inbox.hook_token("cinnox", NAME)
    hooks = Hooks(zaps={}, apps={("cinnox", NAME): AppHook("cinnox", NAME, token)})
    server = uvicorn.Server(
        uvicorn.Config(create_app(inbox, lambda: hooks), port=0, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield Running(f"http://127.0.0.1:{port}", inbox, inbox_url, token)
    server.should_exit = True
    await task
    await inbox.close()


@pytest.fixture
def connection(cinnox_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Sandbox:
    """Connection NAME to the sandbox's account, from the environment."""
    prefix = f"ZAPFLOW_CINNOX_{NAME.upper()}_"
    monkeypatch.setenv(prefix + "APP_ID", cinnox_sandbox.app_id)
    monkeypatch.setenv(prefix + "APP_TOKEN", cinnox_sandbox.token)
    monkeypatch.setenv(prefix + "BASE_URL", cinnox_sandbox.base_url)
    return cinnox_sandbox


def write_zaps(folder: Path, families: list[str] = FAMILIES) -> Path:
    folder.mkdir(exist_ok=True)
    for family in families:
        trigger = TRIGGERS[family]
        (folder / f"{trigger}.yaml").write_text(
            textwrap.dedent(f"""\
            zap: on-{trigger.replace("_", "-")}
            trigger: {{app: cinnox, event: {trigger}, connection: {NAME}}}
            steps:
              - id: status
                action: builtin.format_text
                input: {{transform: capitalize, value: "{{{{ trigger.status }}}}"}}
            """),
            encoding="utf-8",
        )
    return folder


async def zapflow(*args: str) -> Result:
    """The command line, off the event loop the receiver runs on."""
    return await asyncio.to_thread(runner.invoke, cli, list(args))


def flat(result: Result) -> str:
    """The output with line breaks and box drawing gone (error panels wrap)."""
    return re.sub(r"[\s│╭╮╰╯─]+", " ", result.output)


async def stored_urls(sandbox: Sandbox) -> dict[str, str]:
    subs = await asyncio.to_thread(sandbox.control.subscriptions)
    return {s["family"]: s["url"] for s in subs if s["appId"] == sandbox.app_id}


# --------------------------------------------------------------------------- subscribe


async def test_each_family_gets_its_own_url_and_its_events_reach_the_right_hook(
    receiver: Running, connection: Sandbox, tmp_path: Path
) -> None:
    zaps = write_zaps(tmp_path / "zaps")
    result = await zapflow("cinnox", "subscribe", NAME, "--url", receiver.base, "--zaps", str(zaps))
    assert result.exit_code == 0, result.output
    masked = f"{receiver.url}/hooks/cinnox/{NAME}/{receiver.token[:4]}…"
    for family, trigger in TRIGGERS.items():
        zap = "on-" + trigger.replace("_", "-")
        assert f"{family}: subscribed → {masked}/{family}  (zaps: {zap})" in result.output
    assert receiver.token not in result.output and connection.token not in result.output

    # the sandbox stores four different URLs, each ending in its family
    urls = await stored_urls(connection)
    assert urls == {family: f"{receiver.base}/{family}" for family in FAMILIES}
    assert len(set(urls.values())) == 4

    # GET /<family>-event-sub answers what the sandbox stored
    for family in FAMILIES:
        path = wire.EVENT_SUB_GET.format(family=family)
        reply = (await asyncio.to_thread(connection.call, "GET", path)).json()
        assert (reply["code"], reply["enabled"], reply["url"]) == (0, True, urls[family])

    checked = await zapflow(
        "cinnox", "subscriptions", NAME, "--url", receiver.base, "--zaps", str(zaps)
    )
    assert checked.exit_code == 0, checked.output
    assert "warning" not in checked.output
    assert f"all 4 families are as the zaps in {zaps}/ need" in checked.output

    # each family's events reach its own hook and are read as that family's triggers
    for trigger in TRIGGERS.values():
        await asyncio.to_thread(connection.control.emit, trigger)
    settled = await asyncio.to_thread(connection.control.wait_for_deliveries, 4, timeout=10)
    assert sorted((d["family"], d["state"], d["lastStatus"]) for d in settled) == [
        (family, "delivered", 200) for family in FAMILIES
    ]
    assert all(d["url"] == urls[d["family"]] for d in settled)
    events = await receiver.inbox.claim("test", limit=100, lease=60)
    assert sorted(e.trigger for e in events) == sorted(TRIGGERS.values())


async def test_subscriptions_warns_about_a_family_pointed_at_another_family(
    receiver: Running, connection: Sandbox, cinnox_receiver: Receiver, tmp_path: Path
) -> None:
    zaps = write_zaps(tmp_path / "zaps")
    done = await zapflow("cinnox", "subscribe", NAME, "--url", receiver.base, "--zaps", str(zaps))
    assert done.exit_code == 0, done.output
    # as the old command did: contact events sent to the label URL
    wrong = f"{receiver.base}/label"
    reply = await asyncio.to_thread(connection.subscribe, "external-contact", wrong)
    assert reply.status_code == 200, reply.text

    args = ["cinnox", "subscriptions", NAME, "--zaps", str(zaps)]
    for extra in ([], ["--url", receiver.base]):
        checked = await zapflow(*args, *extra)
        assert checked.exit_code == 1, checked.output
        assert "warning: external-contact points at the wrong URL: it ends in /label, not " in (
            checked.output
        )
        assert "/external-contact" in checked.output
        assert checked.output.count("warning:") == 1  # the other three are right
        assert "to point each needed family at its own URL" in checked.output

    # one under another hook base (another receiver) is wrong too, once the base is known
    other = f"{cinnox_receiver.hook()}/inquiry"
    reply = await asyncio.to_thread(connection.subscribe, "inquiry", other)
    assert reply.status_code == 200, reply.text
    checked = await zapflow(*args, "--url", receiver.base)
    assert "warning: inquiry points at the wrong URL: it is not under the hook base" in (
        checked.output
    )

    # subscribe puts it right, whatever it was before
    again = await zapflow("cinnox", "subscribe", NAME, "--url", receiver.base, "--zaps", str(zaps))
    assert again.exit_code == 0, again.output
    assert (await zapflow(*args, "--url", receiver.base)).exit_code == 0


async def test_subscriptions_warns_about_missing_and_unneeded_families(
    receiver: Running, connection: Sandbox, tmp_path: Path
) -> None:
    zaps = write_zaps(tmp_path / "zaps", ["inquiry", "outbound-sms"])
    done = await zapflow("cinnox", "subscribe", NAME, "--url", receiver.base, "--zaps", str(zaps))
    assert done.exit_code == 0, done.output
    assert set(await stored_urls(connection)) == {"inquiry", "outbound-sms"}  # only those needed
    reply = await asyncio.to_thread(connection.subscribe, "label", f"{receiver.base}/label")
    assert reply.status_code == 200
    off = await zapflow(
        "cinnox", "subscribe", NAME, "--zaps", str(zaps), "--off", "--family", "outbound-sms"
    )
    assert off.exit_code == 0, off.output
    assert "outbound-sms: unsubscribed  (zaps: on-sms-delivery-receipt)" in off.output

    checked = await zapflow("cinnox", "subscriptions", NAME, "--zaps", str(zaps))
    assert checked.exit_code == 1
    assert "outbound-sms: not subscribed  (zaps: on-sms-delivery-receipt)" in checked.output
    assert "external-contact: not subscribed  (no enabled zap needs it)" in checked.output
    assert re.search(
        r"label: subscribed → \S+/label  \(updated \S+; no enabled zap", checked.output
    )
    assert "warning: outbound-sms is not subscribed, but on-sms-delivery-receipt needs it" in (
        checked.output
    )
    assert f"zapflow cinnox subscribe {NAME} --off --family label" in checked.output
    assert checked.output.count("warning:") == 2


# --------------------------------------------------------------------------- where to deliver


async def test_the_old_style_url_and_the_public_url_give_the_same_urls(
    receiver: Running, connection: Sandbox, tmp_path: Path
) -> None:
    zaps = write_zaps(tmp_path / "zaps")
    expected = {family: f"{receiver.base}/{family}" for family in FAMILIES}

    old = await zapflow(
        "cinnox", "subscribe", NAME, "--url", f"{receiver.base}/inquiry", "--zaps", str(zaps)
    )
    assert old.exit_code == 0, old.output
    assert "note: --url ends in the event family 'inquiry'" in old.output
    assert await stored_urls(connection) == expected

    public = await zapflow(
        "cinnox",
        "subscribe",
        NAME,
        "--public-url",
        receiver.url + "/",
        "--inbox",
        receiver.inbox_url,
        "--zaps",
        str(zaps),
    )
    assert public.exit_code == 0, public.output
    assert "note:" not in public.output and receiver.token not in public.output
    assert await stored_urls(connection) == expected
    checked = await zapflow(
        "cinnox",
        "subscriptions",
        NAME,
        "--public-url",
        receiver.url,
        "--inbox",
        receiver.inbox_url,
        "--zaps",
        str(zaps),
    )
    assert checked.exit_code == 0, checked.output


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "say where CINNOX should deliver: --url HOOK_BASE"),
        (["--url", "ftp://x/hooks/cinnox/hk/t"], "is not an http:// or https:// URL"),
        (["--url", "http://x/hooks/cinnox/other/t"], "is the hook of cinnox connection 'other'"),
        (["--url", "http://x/hooks/zap/orders/t"], "is the hook of 'zap', not of cinnox"),
        (["--url", "http://x/a?b=1"], "takes no ?query or #fragment"),
        (["--url", "http://x/h", "--public-url", "http://x"], "not both"),
        (["--public-url", "http://x/hooks/cinnox/hk/t"], "that is a hook URL; --public-url is"),
        (["--url", "http://x/h", "--family", "staff"], "'staff' is not an event family"),
    ],
)
async def test_clear_errors_before_anything_is_subscribed(
    connection: Sandbox, tmp_path: Path, args: list[str], says: str
) -> None:
    zaps = write_zaps(tmp_path / "zaps")
    result = await zapflow("cinnox", "subscribe", NAME, "--zaps", str(zaps), *args)
    assert result.exit_code == 2
    assert says in flat(result)
    assert await stored_urls(connection) == {}


async def test_reading_subscriptions_the_sandbox_does_not_have(connection: Sandbox) -> None:
    path = wire.EVENT_SUB_GET.format(family="label")
    reply = (await asyncio.to_thread(connection.call, "GET", path)).json()
    assert reply == {"code": 0, "enabled": False, "url": None, "updatedAt": None}
