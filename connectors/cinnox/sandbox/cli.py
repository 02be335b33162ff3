"""``zapflow sandbox``: run a local CINNOX, and drive the running one (accounts, events, what it
received, webhook deliveries, faults, reset).

Only ``serve`` runs the server; every other command talks to it over its control API at
``--url`` (``$ZAPFLOW_SANDBOX_URL``, default http://127.0.0.1:8765). Heavy imports (Starlette,
SQLAlchemy, uvicorn, httpx) happen inside the commands so ``zapflow`` starts quickly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from connectors.cinnox.sandbox.control import SandboxControl

DEFAULT_URL = "http://127.0.0.1:8765"
DEFAULT_HOST, DEFAULT_PORT, DEFAULT_RATE_LIMIT = "127.0.0.1", 8765, 500

app = typer.Typer(
    name="sandbox",
    help="A local CINNOX (API, demo data, webhooks) to try zaps without a CINNOX account. "
    "Without a command: serve.",
    invoke_without_command=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
accounts_app = typer.Typer(
    help="The sandbox's Zapier accounts (App ID, App Token, Base URL); lists them without a "
    "command.",
    invoke_without_command=True,
)
app.add_typer(accounts_app, name="accounts")

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

UrlOption = typer.Option(
    DEFAULT_URL, "--url", envvar="ZAPFLOW_SANDBOX_URL", help="The running sandbox"
)


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


def default_db() -> Path:
    return Path(os.environ.get("ZAPFLOW_HOME", ".zapflow")) / "sandbox.db"


@contextmanager
def control(url: str) -> Iterator[SandboxControl]:
    """A control client; a sandbox that is not running or a refusal ends the command."""
    from connectors.cinnox.sandbox.control import SandboxControl, SandboxError, SandboxNotRunning

    try:
        with SandboxControl(url) as client:
            yield client
    except SandboxNotRunning as exc:
        raise fail(str(exc)) from None
    except SandboxError as exc:
        raise fail(str(exc)) from None


# --------------------------------------------------------------------------- serve


@app.callback()
def main(ctx: typer.Context) -> None:
    """A local CINNOX to try zaps against."""
    if ctx.invoked_subcommand is None:
        _serve(DEFAULT_HOST, DEFAULT_PORT, None, DEFAULT_RATE_LIMIT, None)


@app.command()
def serve(
    host: str = typer.Option(DEFAULT_HOST, help="Address to listen on"),
    port: int = typer.Option(DEFAULT_PORT, help="Port to listen on"),
    db: Path = typer.Option(None, help="SQLite file [default: $ZAPFLOW_HOME/sandbox.db]"),
    rate_limit: int = typer.Option(DEFAULT_RATE_LIMIT, help="Requests per minute per account"),
    base_url: str = typer.Option(None, help="Base URL to give accounts [default: this server]"),
) -> None:
    """Run the sandbox and print the credentials of its first account."""
    _serve(host, port, db, rate_limit, base_url)


def _serve(host: str, port: int, db: Path | None, rate_limit: int, base_url: str | None) -> None:
    import uvicorn

    from connectors._loopback import bind, url_of
    from connectors.cinnox.sandbox.app import create_app
    from connectors.cinnox.sandbox.state import SandboxConfig

    if rate_limit < 1:
        raise fail("--rate-limit must be at least 1")
    try:
        sock = bind(host, port)
    except OSError as exc:
        raise fail(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}. Is a sandbox already "
            "running there? (`zapflow sandbox accounts` talks to it; --port picks another)"
        ) from None
    own_url = url_of(sock)
    if host in ("0.0.0.0", "::"):
        own_url = f"http://127.0.0.1:{port}"  # reachable from here; --base-url for elsewhere
    db = db or default_db()
    sandbox_app = create_app(
        SandboxConfig(db=db, rate_limit=rate_limit, base_url=base_url or own_url)
    )
    first = sandbox_app.state.sandbox.store.accounts()[0]
    shown = base_url or own_url
    # Printed on purpose (as are new tokens by `accounts add` / `regenerate`): the sandbox's
    # own generated credential, shown as the Dashboard shows it, to paste into a connection.
    out.print(f"[bold]CINNOX sandbox[/bold] on {shown}  (state: {db})")
    out.print("Connect a zap with these credentials:")
    print_credentials({**first, "baseUrl": shown})
    if host not in ("127.0.0.1", "localhost", "::1"):
        out.print(
            f"[yellow]Listening on {host}: anyone who can reach it can use the control API "
            "(/sandbox/...) without a token.[/yellow]"
        )
    out.print(
        "[dim]More accounts: zapflow sandbox accounts · events: zapflow sandbox emit TRIGGER · "
        "Ctrl+C stops[/dim]"
    )
    config = uvicorn.Config(
        sandbox_app, log_level="info", lifespan="on", timeout_graceful_shutdown=2
    )
    uvicorn.Server(config).run(sockets=[sock])


# --------------------------------------------------------------------------- accounts


def print_credentials(account: dict[str, Any]) -> None:
    """An account's credentials, one per line and never cut (they are meant to be copied), as
    the Dashboard shows them after Confirm."""
    for label, key in (
        ("Account", "name"),
        ("App ID", "appId"),
        ("App Token", "appToken"),
        ("Base URL", "baseUrl"),
    ):
        out.print(f"  {label:<10} {account[key]}", markup=False)


@accounts_app.callback()
def accounts(ctx: typer.Context, url: str = UrlOption) -> None:
    """List the accounts (tokens shortened; `add` and `regenerate` show them in full)."""
    if ctx.invoked_subcommand is not None:
        return
    with control(url) as c:
        found = c.accounts()
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("name", min_width=min(20, max((len(a["name"]) for a in found), default=4)))
    table.add_column("App ID", no_wrap=True)
    table.add_column("App Token", no_wrap=True)
    table.add_column("Base URL", no_wrap=True)
    for a in found:
        table.add_row(a["name"], a["appId"], f"…{a['appToken'][-4:]}", a["baseUrl"])
    out.print(table)
    out.print(f"{len(found)} of 10 accounts")


@accounts_app.command("add")
def accounts_add(
    name: str = typer.Argument(..., help="Account name"), url: str = UrlOption
) -> None:
    """Add an account (at most 10) and show its new credentials."""
    with control(url) as c:
        added = c.add_account(name)
    print_credentials(added)


@accounts_app.command("rename")
def accounts_rename(
    app_id: str = typer.Argument(..., help="App ID (or current name)"),
    name: str = typer.Argument(..., help="New name"),
    url: str = UrlOption,
) -> None:
    """Rename an account (the name is all the Dashboard lets you edit)."""
    with control(url) as c:
        renamed = c.rename_account(app_id, name)
    out.print(f"renamed {renamed['appId']} to {renamed['name']!r}")


@accounts_app.command("regenerate")
def accounts_regenerate(
    app_id: str = typer.Argument(..., help="App ID (or name)"), url: str = UrlOption
) -> None:
    """Give an account a new App Token; the old one stops working at once."""
    with control(url) as c:
        account = c.regenerate_token(app_id)
    print_credentials(account)
    out.print("[yellow]The old App Token no longer works: update connections that use it.[/yellow]")


@accounts_app.command("delete")
def accounts_delete(
    app_id: str = typer.Argument(..., help="App ID (or name)"), url: str = UrlOption
) -> None:
    """Delete an account: its token stops working and its event subscriptions end."""
    with control(url) as c:
        gone = c.delete_account(app_id)
    out.print(f"deleted {gone['name']!r} ({gone['appId']})")


# --------------------------------------------------------------------------- emit


def _fields(pairs: list[str]) -> dict[str, str]:
    fields = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise fail(f"--set {pair!r}: use key=value")
        fields[key.strip()] = value
    return fields


@app.command()
def emit(
    trigger: str = typer.Argument(None, help="Trigger name, e.g. missed_enquiry (--list: all)"),
    set_: list[str] = typer.Option(
        None, "--set", help="Override an event field: key=value (repeatable)"
    ),
    account: str = typer.Option(None, help="Deliver only to this account (App ID or name)"),
    save: Path = typer.Option(
        None,
        "--save",
        help="Also write the delivery body to this file, for `zapflow test ZAP --event FILE "
        "--wire FAMILY`",
    ),
    list_: bool = typer.Option(False, "--list", help="List the triggers"),
    url: str = UrlOption,
) -> None:
    """Emit a trigger's event (changing the sandbox's state to match) to subscribed zaps."""
    with control(url) as c:
        if list_ or trigger is None:
            table = Table("trigger", "event family", "CINNOX trigger")
            for t in c.triggers():
                table.add_row(t["trigger"], t["family"], t["title"])
            out.print(table)
            return
        sent = c.emit(trigger, _fields(set_ or []), account=account)
    out.print(f"emitted [bold]{sent['trigger']}[/bold] ({sent['family']} event):")
    out.print_json(json.dumps(sent["event"]))
    if save is not None:
        save.write_text(json.dumps(sent["event"], indent=2, ensure_ascii=False) + "\n")
        out.print(
            f"saved to {save}: `zapflow test ZAP --event {save} --wire {sent['family']}` runs "
            "a zap on it as the receiver reads it"
        )
    if sent["deliveries"]:
        n = len(sent["deliveries"])
        out.print(f"delivering to {n} subscription(s): zapflow sandbox deliveries")
    else:
        out.print(
            f"[yellow]no account is subscribed to {sent['family']} events, so nothing was "
            "delivered[/yellow] (the sandbox's state changed anyway)"
        )


# --------------------------------------------------------------------------- sent, deliveries


def _short(text: Any, width: int = 60) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= width else text[: width - 1] + "…"


@app.command()
def sent(
    kind: str = typer.Argument(None, help="sms, im or contacts (default: all)"),
    limit: int = typer.Option(20, "-n", "--limit", help="How many, newest first"),
    url: str = UrlOption,
) -> None:
    """What clients sent the sandbox: SMS, IMs, contacts created or updated."""
    if kind is not None and kind not in ("sms", "im", "ims", "contact", "contacts"):
        raise fail("kind must be sms, im or contacts")
    with control(url) as c:
        found = c.sent(kind, limit)
    table = Table("#", "time", "kind", "account", "what", "result")
    for s in found:
        req, res = s["request"], s["result"]
        if s["kind"] == "sms":
            what = f"{req.get('senderNumber')} → {req.get('recipientNumber')}: {req.get('text')}"
            result = f"{res.get('status')} ({res.get('segments')} SMS) {res.get('transactionID')}"
        elif s["kind"] == "im":
            texts = " | ".join(m.get("text", "") for m in req.get("messages", []))
            what, result = f"→ {res.get('to')}: {texts}", f"room {res.get('roomID')}"
        else:
            what, result = f"{res.get('action')} {res.get('fullName')}", f"id {res.get('id')}"
        table.add_row(str(s["id"]), s["at"], s["kind"], s["appId"][:8], _short(what), result)
    out.print(table if found else "nothing received yet")


@app.command()
def deliveries(
    family: str = typer.Option(None, help="Only this event family, e.g. inquiry"),
    limit: int = typer.Option(20, "-n", "--limit", help="How many, newest first"),
    body: bool = typer.Option(False, "--body", help="Also print each event body"),
    url: str = UrlOption,
) -> None:
    """Webhook deliveries: URL, family, attempts, last status."""
    with control(url) as c:
        found = c.deliveries(family, limit)
    table = Table("#", "time", "family", "url", "attempts", "HTTP", "state", "error")
    for d in found:
        state = {"delivered": "[green]delivered[/green]", "failed": "[red]failed[/red]"}.get(
            d["state"], d["state"]
        )
        table.add_row(
            str(d["id"]),
            d["createdAt"],
            d["family"],
            _short(d["url"], 50),
            str(d["attempts"]),
            str(d["lastStatus"] or "-"),
            state,
            _short(d["lastError"] or "", 40),
        )
    if not found:
        out.print("no deliveries yet (zaps subscribe with PATCH /{family}-event-sub)")
        return
    out.print(table)
    if body:
        for d in found:
            out.print(f"#{d['id']}")
            out.print_json(json.dumps(d["body"]))


# --------------------------------------------------------------------------- faults, reset, show


def _reply_changes(items: list[str]) -> dict[str, Any] | None:
    changes: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{item!r}: use KEY=JSON, e.g. omniType='\"WOZTELL\"'")
        if not raw.strip():
            changes[key.strip()] = None
            continue
        try:
            changes[key.strip()] = json.loads(raw)
        except ValueError:
            changes[key.strip()] = raw  # plain text is taken as a string
    return changes or None


@app.command()
def fault(
    path: str = typer.Argument(
        None, help="API path glob after /v1/api/apps/{app_id}, e.g. /send_sms"
    ),
    code: int = typer.Option(None, help="Answer this CINNOX code, e.g. 6451001 or 6451000"),
    status: int = typer.Option(None, help="Answer this HTTP status, e.g. 500 or 503"),
    delay: float = typer.Option(None, help="Wait this many seconds first"),
    times: int = typer.Option(1, help="For the next N matching requests"),
    message: str = typer.Option(None, help="The error message"),
    reply: list[str] = typer.Option(
        None,
        "--reply",
        metavar="KEY=JSON",
        help="Let the request succeed but change its reply: KEY=JSON sets a key (e.g. "
        "'omniType=\"WOZTELL\"'), KEY= removes it; repeatable",
    ),
    list_: bool = typer.Option(False, "--list", help="List active faults"),
    clear: bool = typer.Option(False, "--clear", help="Remove every fault"),
    url: str = UrlOption,
) -> None:
    """Make the next API requests to PATH fail or wait (--code, --status, --delay), or answer
    in a shape the docs do not show (--reply)."""
    changes = _reply_changes(reply or [])
    with control(url) as c:
        if clear:
            c.clear_faults()
            out.print("faults cleared")
            return
        if path is not None and not list_:
            added = c.add_fault(
                path,
                code=code,
                status=status,
                delay=delay,
                times=times,
                message=message,
                changes=changes,
            )
            out.print(
                f"fault #{added['id']} set for the next {added['times']} request(s) to "
                f"{added['path']}"
            )
            return
        active = c.faults()
    table = Table("#", "path", "code", "HTTP", "delay", "times left", "message / reply changes")
    for f in active:
        table.add_row(
            str(f["id"]),
            f["path"],
            str(f["code"] or "-"),
            str(f["status"] or "-"),
            f"{f['delay']:g}s" if f["delay"] else "-",
            str(f["times"]),
            f["message"] or (json.dumps(f["changes"]) if f.get("changes") else ""),
        )
    out.print(table if active else "no active faults")


@app.command()
def reset(
    accounts: bool = typer.Option(False, "--accounts", help="Also reset accounts (one: zapflow)"),
    url: str = UrlOption,
) -> None:
    """Back to the demo data; forget what was received, deliveries and faults."""
    with control(url) as c:
        c.reset(accounts=accounts)
    out.print("sandbox reset to the demo data" + (" and one account" if accounts else ""))


COLUMNS = {
    "staff": ("eid", "firstName", "lastName", "department", "email"),
    "contacts": ("id", "firstName", "lastName", "mobilePhone", "companyName", "ownerName"),
    "enquiries": ("displayCaseNumber", "status", "channel", "visitorName", "inquiry"),
    "rooms": ("roomID", "name", "type"),
    "numbers": ("number", "type", "name", "supportSMS", "supportCall"),
    "labels": ("id", "name", "colorName", "colorCode"),
}


@app.command()
def show(
    kind: str = typer.Argument(..., help=f"One of: {', '.join(COLUMNS)}"),
    id: str = typer.Option(None, "--id", help="Show one record in full"),
    url: str = UrlOption,
) -> None:
    """The sandbox's records, to find ids, numbers and case numbers to use in zaps."""
    if kind not in COLUMNS:
        raise fail(f"kind must be one of: {', '.join(COLUMNS)}")
    with control(url) as c:
        found = c.data(kind, id)
    if id is not None:
        if not found:
            raise fail(f"no {kind} record {id!r}")
        out.print_json(json.dumps(found[0]))
        return
    table = Table(*COLUMNS[kind])
    for record in found:
        table.add_row(*(str(record.get(col, "")) for col in COLUMNS[kind]))
    out.print(table)
