"""`zapflow cinnox ...`: CINNOX-specific commands (event subscriptions).

CINNOX has one subscription per event family, and zapflow's receiver reads a delivery by the
last segment of the hook URL it arrives on (``/hooks/cinnox/<connection>/<token>/<family>``).
So each family is subscribed to its own URL under the connection's hook base.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar, get_args
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.markup import escape

from connectors._host import HostProblem, host

app = typer.Typer(help="CINNOX: event subscriptions for your zaps.", no_args_is_help=True)
out = Console(highlight=False, soft_wrap=True)
T = TypeVar("T")

URL_HELP = (
    "The connection's hook base, as `zapflow serve` prints it without /<channel>: "
    "http://HOST:PORT/hooks/cinnox/CONNECTION/TOKEN (each family gets HOOK_BASE/<family>)"
)
PUBLIC_URL_HELP = (
    "Instead of --url: the receiver's public address (as `zapflow serve --public-url` takes); "
    "the hook token is read from the inbox"
)
INBOX_HELP = "With --public-url: SQLAlchemy URL of the inbox (default: SQLite in the state folder)"
ZAPS_HELP = "Folder of zaps"


def zap_families() -> list[str]:
    """The event families zapflow's CINNOX triggers use, in a stable order."""
    from connectors.cinnox.triggers import FAMILY_OF

    return sorted(set(FAMILY_OF.values()))


def families_needed(zaps: Path, connection: str) -> dict[str, list[str]]:
    """Event family → the enabled zaps on this connection whose trigger needs it."""
    from connectors.cinnox.triggers import FAMILY_OF

    try:
        triggers = host().zap_triggers(zaps)
    except HostProblem as exc:
        raise typer.BadParameter(str(exc)) from None
    needed: dict[str, list[str]] = {}
    for trig in triggers:
        if trig.enabled and trig.app == "cinnox" and trig.connection == connection:
            needed.setdefault(FAMILY_OF[trig.event], []).append(trig.zap)
    return needed


def family_url(hook_base: str, family: str) -> str:
    """Where CINNOX should deliver ``family``'s events: the hook base + ``/<family>``."""
    return f"{hook_base.rstrip('/')}/{family}"


def shown(url: str) -> str:
    """A URL for the terminal: the token of a zapflow hook URL cut to its first 4 characters
    (the URL is the credential of a hook, like a password)."""
    return re.sub(r"(/hooks/[^/]+/[^/]+/)([^/?#]{1,4})[^/?#]*", r"\1\2…", url)


def _http_url(option: str, value: str) -> Any:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise typer.BadParameter(
            f"{value!r} is not an http:// or https:// URL", param_hint=f"'{option}'"
        )
    if parts.query or parts.fragment:
        raise typer.BadParameter(
            "the address takes no ?query or #fragment (a family's name is appended to it)",
            param_hint=f"'{option}'",
        )
    return parts


def hook_base_from_url(url: str, connection: str) -> tuple[str, list[str]]:
    """(the hook base ``--url`` names, notes for the user).

    Accepts the old style too, a URL ending in an event family (``…/<token>/inquiry``): that
    segment is dropped. Refuses a zapflow hook URL of another app or connection."""
    from connectors.cinnox import wire

    parts = _http_url("--url", url)
    notes = []
    base = url.strip().rstrip("/")
    segments = [s for s in parts.path.split("/") if s]
    known = set(zap_families()) | set(get_args(wire.EventFamily))
    if segments and segments[-1] in known:
        family = segments.pop()
        base = base[: -len(family)].rstrip("/")
        notes.append(
            f"note: --url ends in the event family {family!r}; using {shown(base)} as the hook "
            "base, each family subscribed to its own URL under it"
        )
    expected = f"/hooks/cinnox/{connection}/<token>"
    if len(segments) >= 4 and segments[-4] == "hooks":
        app_name, name = segments[-3], segments[-2]
        if (app_name, name) != ("cinnox", connection):
            what = f"cinnox connection {name!r}" if app_name == "cinnox" else f"{app_name!r}"
            raise typer.BadParameter(
                f"{shown(base)} is the hook of {what}, not of cinnox connection {connection!r}; "
                f"give the hook base ending in {expected} (zapflow serve prints it)",
                param_hint="'--url'",
            )
    else:
        notes.append(
            f"note: --url does not end in {expected} as zapflow's hook URLs do; "
            "using it as given (a proxy in front of the receiver?)"
        )
    return base, notes


def hook_base(
    connection: str, url: str | None, public_url: str | None, inbox_url: str | None
) -> tuple[str | None, list[str]]:
    """The connection's hook base from ``--url`` or ``--public-url`` (+ the inbox's token);
    ``None`` when neither was given."""
    if url and public_url:
        raise typer.BadParameter(
            "give --url (the hook base) or --public-url (the receiver's address), not both",
            param_hint="'--url' / '--public-url'",
        )
    if url:
        return hook_base_from_url(url, connection)
    if not public_url:
        return None, []
    parts = _http_url("--public-url", public_url)
    if "/hooks/" in parts.path + "/":
        raise typer.BadParameter(
            "that is a hook URL; --public-url is the receiver's address, as `zapflow serve "
            "--public-url` takes (e.g. https://zapflow.example.com); give a hook URL with --url",
            param_hint="'--public-url'",
        )
    try:
        return host().hook_base(public_url, "cinnox", connection, inbox_url), []
    except HostProblem as exc:
        raise typer.BadParameter(str(exc), param_hint="'--inbox'") from None


def _families_option(families: list[str] | None) -> list[str]:
    allowed = zap_families()
    for family in families or []:
        if family not in allowed:
            raise typer.BadParameter(
                f"{family!r} is not an event family zapflow's triggers use; "
                f"one of: {', '.join(allowed)}",
                param_hint="'--family'",
            )
    return sorted(set(families or []))


# --------------------------------------------------------------------------- CINNOX calls


async def set_subscription(connection: Any, name: str, family: str, url: str, on: bool) -> Any:
    from connectors.cinnox import wire
    from connectors.cinnox.client import CinnoxClient

    body = wire.EventSubscription(enabled=on, url=url).model_dump()
    reply = await CinnoxClient(connection, connection_name=name).request(
        "PATCH", wire.EVENT_SUB.format(family=family), json=body
    )
    return wire.EventSubscriptionReply.model_validate(reply)


async def get_subscription(connection: Any, name: str, family: str) -> dict[str, Any]:
    """``{enabled, url, updatedAt}`` of one family (``GET``: a GUESS, see wire.EVENT_SUB_GET)."""
    from connectors.cinnox import wire
    from connectors.cinnox.client import CinnoxClient

    reply = await CinnoxClient(connection, connection_name=name).request(
        "GET", wire.EVENT_SUB_GET.format(family=family)
    )
    url = reply.get("url")
    return {
        "enabled": bool(reply.get("enabled")) and bool(url),
        "url": str(url) if url else None,
        "updatedAt": reply.get("updatedAt"),
    }


def _with_connection(name: str, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``work(connection)`` with the CINNOX connection ``name`` (from the environment, or
    stored on the Prefect server); a problem is printed and exits 1."""
    from connectors._errors import ConnectorError
    from connectors.cinnox.client import close_all

    async def run(connection: Any) -> T:
        try:
            return await work(connection)
        finally:
            await close_all()

    try:
        return host().run_with_connection("cinnox", name, run)
    except (ConnectorError, HostProblem) as exc:
        out.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None


def _zaps_of(needed: dict[str, list[str]], family: str) -> str:
    zaps = needed.get(family)
    return f"zaps: {', '.join(zaps)}" if zaps else "no enabled zap needs it"


# --------------------------------------------------------------------------- commands


@app.command()
def subscribe(
    connection: str = typer.Argument(
        ..., metavar="CONNECTION", help="The CINNOX connection, e.g. main"
    ),
    url: str = typer.Option(None, "--url", metavar="HOOK_BASE", help=URL_HELP),
    public_url: str = typer.Option(None, "--public-url", metavar="URL", help=PUBLIC_URL_HELP),
    inbox_url: str = typer.Option(None, "--inbox", envvar="ZAPFLOW_INBOX_URL", help=INBOX_HELP),
    zaps: Path = typer.Option(Path("zaps"), "--zaps", help=ZAPS_HELP),
    family: list[str] = typer.Option(
        None,
        "--family",
        metavar="FAMILY",
        help="Only this event family (repeatable; default: those zaps need)",
    ),
    off: bool = typer.Option(False, "--off", help="Unsubscribe those families instead"),
) -> None:
    """Subscribe (or --off: unsubscribe) the event families that enabled zaps on CONNECTION
    need, each to its own URL: HOOK_BASE/<family>.

    CINNOX verifies each URL first (it POSTs a challenge the receiver must echo back), so
    `zapflow serve` must be running with those zaps. Running it again is harmless.
    """
    chosen = _families_option(family)
    base, notes = hook_base(connection, url, public_url, inbox_url)
    if base is None and not off:
        raise typer.BadParameter(
            "say where CINNOX should deliver: --url HOOK_BASE (the `cinnox connection "
            f"{connection}:` line zapflow serve prints, without /<channel>) or --public-url URL "
            "(the receiver's public address; the token is read from the inbox)",
            param_hint="'--url' / '--public-url'",
        )
    needed = families_needed(zaps, connection)
    families = chosen or sorted(needed)
    if not families:
        out.print(f"no enabled zap in {zaps}/ is triggered by cinnox connection {connection!r}")
        raise typer.Exit(0)
    for note in notes:
        out.print(note, markup=False)

    async def apply(resolved: Any) -> None:
        for name in families:
            # Unsubscribing needs no URL; CINNOX's body has one, so an empty one goes then.
            target = family_url(base, name) if base else ""
            reply = await set_subscription(resolved, connection, name, target, not off)
            state = "subscribed" if reply.enabled else "unsubscribed"
            where = f" → {shown(reply.url)}" if reply.url else ""
            line = f"{name}: {state}{where}  ({_zaps_of(needed, name)})"
            out.print(line, markup=False)

    _with_connection(connection, apply)


@app.command()
def subscriptions(
    connection: str = typer.Argument(
        ..., metavar="CONNECTION", help="The CINNOX connection, e.g. main"
    ),
    url: str = typer.Option(
        None, "--url", metavar="HOOK_BASE", help="The hook base every family should be under"
    ),
    public_url: str = typer.Option(None, "--public-url", metavar="URL", help=PUBLIC_URL_HELP),
    inbox_url: str = typer.Option(None, "--inbox", envvar="ZAPFLOW_INBOX_URL", help=INBOX_HELP),
    zaps: Path = typer.Option(Path("zaps"), "--zaps", help=ZAPS_HELP),
) -> None:
    """Show CINNOX's subscription of each event family for CONNECTION, and warn where one
    points at the wrong URL, a family the zaps need is not subscribed, or one no zap needs is.

    Exits 1 when there is a warning. Reading a subscription (GET /<family>-event-sub) is not
    in CINNOX's public API: the sandbox answers it, CINNOX may refuse it.
    """
    from connectors._errors import AuthError, PermanentError
    from connectors.cinnox import wire

    base, notes = hook_base(connection, url, public_url, inbox_url)
    needed = families_needed(zaps, connection)
    families = zap_families()
    for note in notes:
        out.print(note, markup=False)

    async def read(resolved: Any) -> dict[str, dict[str, Any]]:
        found = {}
        for name in families:
            try:
                found[name] = await get_subscription(resolved, connection, name)
            except PermanentError as exc:
                if isinstance(exc, AuthError):
                    raise
                raise PermanentError(
                    f"{exc}. Reading a subscription (GET {wire.EVENT_SUB}) is zapflow's guess, "
                    "not CINNOX's public API (connectors/cinnox/wire.py, EVENT_SUB_GET); "
                    "`zapflow cinnox subscribe` does not need it"
                ) from None
        return found

    found = _with_connection(connection, read)
    warnings = []
    for name in families:
        sub = found[name]
        if not sub["enabled"]:
            out.print(f"{name}: not subscribed  ({_zaps_of(needed, name)})", markup=False)
            if name in needed:
                zaps_needing = needed[name]
                verb = "needs" if len(zaps_needing) == 1 else "need"
                warnings.append(
                    f"{name} is not subscribed, but {', '.join(zaps_needing)} {verb} it: "
                    "its events never arrive"
                )
            continue
        target = str(sub["url"])
        updated = f"updated {sub['updatedAt']}; " if sub.get("updatedAt") else ""
        line = f"{name}: subscribed → {shown(target)}  ({updated}{_zaps_of(needed, name)})"
        out.print(line, markup=False)
        wrong = _wrong_url(name, target, base, connection)
        if wrong:
            warnings.append(f"{name} points at the wrong URL: {wrong}")
        if name not in needed:
            warnings.append(
                f"{name} is subscribed but no enabled zap in {zaps}/ on connection "
                f"{connection!r} needs it (to end it: zapflow cinnox subscribe {connection} "
                f"--off --family {name})"
            )
    for warning in warnings:
        out.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    if warnings:
        fix = f"zapflow cinnox subscribe {connection} --zaps {zaps} --url HOOK_BASE"
        out.print(f"to point each needed family at its own URL: {fix} (or --public-url URL)")
        raise typer.Exit(1)
    out.print(f"all {len(families)} families are as the zaps in {zaps}/ need")


def _wrong_url(family: str, url: str, base: str | None, connection: str) -> str | None:
    """Why ``url`` is not where ``family`` should be delivered, or None."""
    head, _, last = url.rstrip("/").rpartition("/")
    reasons = []
    if last != family:
        reasons.append(
            f"it ends in /{last}, not /{family}, so the receiver reads these events as "
            f"{last!r} ones and keeps them as unrecognised (zapflow events --unrecognised)"
        )
    if base is not None and head != base.rstrip("/"):
        reasons.append(f"it is not under the hook base {shown(base)}")
    elif base is None:
        segments = urlsplit(head).path.strip("/").split("/")
        if len(segments) >= 4 and segments[-4] == "hooks":
            app_name, name = segments[-3], segments[-2]
            if (app_name, name) != ("cinnox", connection):
                reasons.append(f"it is the hook of {app_name} connection {name!r}")
    return "; ".join(reasons) or None
