"""``zapflow server``: zapflow's own Prefect server (start, stop, status)."""

from __future__ import annotations

import typer

from flows.cli._common import (
    fail,
    out,
    server_app,
)

# --------------------------------------------------------------------------- server


@server_app.command("start")
def server_start() -> None:
    """Start zapflow's Prefect server (UI on http://127.0.0.1:4200, or $ZAPFLOW_PREFECT_PORT)."""
    from flows import server

    try:
        url = server.start()
    except server.ServerError as exc:
        raise fail(str(exc)) from None
    out.print(f"Prefect server up: UI {server.ui_url(url)}, API {url}")


@server_app.command("stop")
def server_stop() -> None:
    """Stop zapflow's Prefect server."""
    from flows import server

    out.print("stopped" if server.stop() else "zapflow's Prefect server is not running")


@server_app.command("status")
def server_status() -> None:
    """Say which Prefect server zapflow uses and whether it answers."""
    from flows import server

    configured = server.configured_api_url()
    try:
        url = configured or server.own_api_url()
    except server.ServerError as exc:
        raise fail(str(exc)) from None
    state = "up" if server.healthy(url) else "down"
    whose = "PREFECT_API_URL" if configured else f"zapflow's own ({server.state_dir()})"
    out.print(f"{whose}: {url} is {state}")
    if state == "down":
        raise typer.Exit(1)
