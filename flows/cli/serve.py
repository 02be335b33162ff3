"""``zapflow serve``: the receiver, dispatcher, pollers and schedules, until stopped."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import typer

from flows.cli._common import (
    DEFAULT_ZAPS,
    INBOX_HELP,
    app,
    err,
    fail,
    out,
    prefect_api,
)

# --------------------------------------------------------------------------- serve


@app.command()
def serve(
    folder: Path = typer.Argument(DEFAULT_ZAPS, metavar="ZAP_DIR", help="Folder of zaps"),
    host: str = typer.Option("127.0.0.1", "--host", help="Where the receiver listens"),
    port: int = typer.Option(8787, "--port", help="The receiver's port"),
    public_url: str = typer.Option(
        None, "--public-url", help="How senders reach the receiver (for the hook URLs shown)"
    ),
    inbox_url: str = typer.Option(None, "--inbox", envvar="ZAPFLOW_INBOX_URL", help=INBOX_HELP),
    concurrency: int = typer.Option(
        50, "--concurrency", help="Events each zap runs at once (in its live flow run)"
    ),
    live_idle: float = typer.Option(
        5.0, "--live-idle", help="Seconds a zap's live flow run stays open waiting for events"
    ),
    retention: str = typer.Option(
        "7d",
        "--retention",
        envvar="ZAPFLOW_RETENTION",
        help="Keep processed events and their runs this long (e.g. 36h, 30d; 0 = for ever)",
    ),
    max_body: str = typer.Option(
        "1MiB",
        "--max-body",
        envvar="ZAPFLOW_MAX_BODY",
        help="Largest webhook body accepted (e.g. 512KiB, 4MiB); larger ones get a 413",
    ),
    metrics_port: int = typer.Option(
        None,
        "--metrics-port",
        help="Also answer /metrics, /healthz and /readyz of the zap runs on this port (a worker "
        "answers them on --port; a receiver's own are on its hook port)",
    ),
    role: str = typer.Option(
        "all",
        "--role",
        envvar="ZAPFLOW_ROLE",
        help="all: everything here; receiver: only accept deliveries into the shared inbox; "
        "worker: only run zaps from it (dispatcher, pollers, schedules)",
    ),
) -> None:
    """Run everything: receiver, inbox, dispatcher, following ZAP_DIR; Ctrl-C stops gracefully.

    On several machines, share one PostgreSQL inbox (--inbox) and run receivers and workers
    (--role) on as many as needed."""
    import logging

    from flows.intake.serve import serve_until_signalled
    from flows.model import parse_duration, parse_size

    logging.basicConfig(level=logging.WARNING)
    if not folder.is_dir():
        raise fail(f"{folder}: no such folder of zaps")
    try:
        keep = timedelta(0) if retention.strip() == "0" else parse_duration(retention)
    except ValueError as exc:
        raise fail(f"--retention: {exc}") from None
    if not isinstance(keep, timedelta):
        raise fail(f"--retention: {retention!r} is not a duration such as 36h or 30d")
    try:
        body_limit = parse_size(max_body)
    except ValueError as exc:
        raise fail(f"--max-body: {exc}") from None
    from flows.intake.members import ROLES

    if role not in ROLES:
        raise fail(f"--role {role!r}: expected one of {', '.join(ROLES)}")
    if role != "all" and not (inbox_url or "").startswith("postgresql"):
        err.print(
            f"note: --role {role} on a SQLite inbox works on one machine only, where a worker "
            "sees a receiver's events at its next look (within 1 s); across machines give "
            "--inbox postgresql+asyncpg://…",
            markup=False,
        )
    if inbox_url:  # the storage app keeps its values in the same database
        os.environ["ZAPFLOW_INBOX_URL"] = inbox_url
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "public_url": public_url,
        "inbox_url": inbox_url,
        "concurrency": concurrency,
        "live_idle": live_idle,
        "max_body": body_limit,
        "retention": keep or None,
        "report": lambda text: out.print(text, markup=False),
        "role": role,
        "metrics_port": metrics_port,
    }
    if role == "receiver":  # accepts into the inbox: no run history to reach
        serve_until_signalled(folder, **options)
        return
    with prefect_api() as url:
        from flows import server

        out.print(f"run history: {server.ui_url(url)}")
        for warning in server.version_warnings(url):
            err.print(f"warning: {warning}", markup=False)
        _prepare_connection_blocks()
        serve_until_signalled(folder, **options)


def _prepare_connection_blocks() -> None:
    """Register each app's connection block type (the Prefect UI's Blocks page then has a form
    for each) and move connections stored in the old generic form to them."""
    from connectors import registry
    from flows import connections

    async def prepare() -> list[str]:
        apps = registry.apps()
        await connections.register_block_types(apps)
        return await connections.migrate_legacy(apps)

    try:
        moved = asyncio.run(prepare())
    except Exception as exc:  # the zaps still run; connections are read when used
        err.print(f"warning: could not register connection block types: {exc}", markup=False)
        return
    if moved:
        out.print(f"moved {len(moved)} connection(s) to their app's block type: {', '.join(moved)}")


# --------------------------------------------------------------------------- status


@app.command()
def status(
    inbox_url: str = typer.Option(None, "--inbox", envvar="ZAPFLOW_INBOX_URL", help=INBOX_HELP),
) -> None:
    """Every serve process sharing the inbox — role, host, last heartbeat, the pollers it
    holds — and how many events wait."""
    from datetime import UTC, datetime

    from rich.table import Table

    from flows.intake.db import InboxError
    from flows.intake.dispatcher import SILENT_AFTER

    try:
        members, counts, unread = asyncio.run(_status(inbox_url))
    except InboxError as exc:
        raise fail(str(exc)) from None
    now = datetime.now(UTC)
    table = Table("process", "role", "host", "up since", "last heartbeat", "holds")
    for member in members:
        ago = (now - member.seen_at).total_seconds()
        seen = f"{ago:.0f} s ago"
        if ago > SILENT_AFTER:  # its work is taken over by the others
            seen = f"[red]{seen}: silent, taken as dead[/red]"
        held = ", ".join(name.removeprefix("poller:") for name in member.leases)
        table.add_row(
            member.worker,
            member.role,
            member.host,
            f"{member.started_at.astimezone():%m-%d %H:%M:%S}",
            seen,
            f"pollers: {held}" if held else "",
        )
    out.print(table if members else "no serve process shares this inbox now")
    out.print(
        f"events: {counts['pending']} waiting, {counts['claimed']} running, "
        f"{counts['parked']} parked (delays, limits, holds), {counts['done']} done"
        + (f"; {unread} deliveries kept unrecognised" if unread else "")
    )


async def _status(inbox_url: str | None) -> tuple[list[Any], dict[str, int], int]:
    from flows.intake import unrecognised
    from flows.intake.inbox import Inbox

    async with await Inbox.open(inbox_url) as inbox:
        return (
            await inbox.members(),
            await inbox.counts(),
            await unrecognised.waiting_count(inbox),
        )


# --------------------------------------------------------------------------- deploy


@app.command()
def deploy(
    folder: Path = typer.Argument(DEFAULT_ZAPS, metavar="ZAP_DIR", help="Folder of zaps"),
    pool: str = typer.Option("zapflow", "--pool", help="The work pool (made if missing)"),
    project_dir: Path = typer.Option(
        None,
        "--project-dir",
        help="Where Prefect workers find this project (default: here); their runs start there",
    ),
) -> None:
    """One Prefect deployment per zap (zap/<id>), kept in step with ZAP_DIR: made or updated,
    and deleted when its zap is gone. A Prefect worker on the pool runs them:
    `prefect worker start --pool zapflow`."""
    from flows.deployments import deploy as deploy_zaps
    from flows.loader import load_all
    from flows.model import with_failure_zaps

    if not folder.is_dir():
        raise fail(f"{folder}: no such folder of zaps")
    loaded, problems = load_all([folder])
    if problems:  # deploying some and deleting the others' deployments would surprise
        for problem in problems:
            err.print(str(problem), markup=False)
        raise fail(f"{len(problems)} problem(s) in {folder}: nothing deployed")
    zaps = with_failure_zaps(item.zap for item in loaded)
    where = (project_dir or Path.cwd()).resolve()

    async def run() -> Any:
        from prefect.client.orchestration import get_client

        async with get_client() as client:
            return await deploy_zaps(client, zaps, pool=pool, project_dir=where)

    with prefect_api() as url:
        from flows import server

        done = asyncio.run(run())
        ui = server.ui_url(url)
    if done.pool_made:
        out.print(f"made work pool {pool!r} (type process)")
    for verb, names in (("made", done.made), ("updated", done.updated), ("deleted", done.deleted)):
        for name in names:
            out.print(f"{verb} deployment zap/{name}")
    out.print(
        f"{len(zaps)} zap(s) deployed on pool {pool!r}; run them from {ui}/deployments, with a "
        f"worker on the pool: prefect worker start --pool {pool}"
    )
