"""`zapflow cinnox ...`: CINNOX-specific commands (event subscriptions)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

app = typer.Typer(help="CINNOX: event subscriptions for your zaps.", no_args_is_help=True)
out = Console(highlight=False, soft_wrap=True)


def families_needed(zaps: Path, connection: str) -> dict[str, list[str]]:
    """Event family → the enabled zaps on this connection whose trigger needs it."""
    from connectors.cinnox.triggers import FAMILY_OF
    from flows.loader import load_all

    loaded, problems = load_all([zaps] if zaps.exists() else [])
    if problems:
        raise typer.BadParameter(
            "fix these zaps first (zapflow validate):\n" + "\n".join(map(str, problems))
        )
    needed: dict[str, list[str]] = {}
    for item in loaded:
        trig = item.zap.trigger
        if item.zap.enabled and trig.app == "cinnox" and trig.connection == connection:
            needed.setdefault(FAMILY_OF[trig.event], []).append(item.zap.zap)
    return needed


async def set_subscription(connection: Any, name: str, family: str, url: str, on: bool) -> Any:
    from connectors.cinnox import wire
    from connectors.cinnox.client import CinnoxClient

    body = wire.EventSubscription(enabled=on, url=url).model_dump()
    reply = await CinnoxClient(connection, connection_name=name).request(
        "PATCH", wire.EVENT_SUB.format(family=family), json=body
    )
    return wire.EventSubscriptionReply.model_validate(reply)


@app.command()
def subscribe(
    connection: str = typer.Argument(..., help="The CINNOX connection, e.g. main"),
    url: str = typer.Option(..., "--url", help="Where CINNOX should deliver events"),
    zaps: Path = typer.Option(Path("zaps"), "--zaps", help="Folder of zaps"),
    off: bool = typer.Option(False, "--off", help="Unsubscribe those families instead"),
) -> None:
    """Subscribe (or --off: unsubscribe) the event families that enabled zaps on CONNECTION need.

    CINNOX verifies the URL first (it POSTs a challenge the receiver must echo back).
    """
    from connectors import registry
    from flows import connections
    from flows.errors import ConnectorError

    needed = families_needed(zaps, connection)
    if not needed:
        out.print(f"no enabled zap in {zaps}/ is triggered by cinnox connection {connection!r}")
        raise typer.Exit(0)

    async def apply() -> list[tuple[str, Any]]:
        resolved = await connections.resolve(registry.app("cinnox"), connection)
        return [
            (family, await set_subscription(resolved, connection, family, url, not off))
            for family in sorted(needed)
        ]

    owner = registry.app("cinnox")
    try:
        if connections.from_env(owner, connection) is not None:
            done = asyncio.run(apply())
        else:
            from flows.cli import prefect_api  # stored connections live on the Prefect server

            with prefect_api():
                done = asyncio.run(apply())
    except (ConnectorError, connections.ConnectionProblem) as exc:
        out.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    for family, reply in done:
        state = "subscribed" if reply.enabled else "unsubscribed"
        out.print(f"{family}: {state} → {reply.url}  (zaps: {', '.join(needed[family])})")
