"""Commands about run history: runs, events, reprocess, held, release, discard, resume,
cancel, replay."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.table import Column, Table

from connectors._errors import ZapError
from flows.cli._common import (
    INBOX_HELP,
    ZapsOption,
    app,
    err,
    fail,
    out,
    prefect_api,
)
from flows.cli.zaps import _report_state

# --------------------------------------------------------------------------- history


NARROW = 120
"""Columns below which `zapflow runs` leaves out how long runs took and prints each run's
message under the table, whole."""


@app.command()
def runs(
    zap: str = typer.Option(None, "--zap", help="Only this zap's runs"),
    limit: int = typer.Option(20, "--limit", "-n", help="How many, newest first"),
    waiting: bool = typer.Option(
        False, "--waiting", help="Only the runs parked in a delay, the soonest due first"
    ),
    inbox_url: str = typer.Option(None, "--inbox", envvar="ZAPFLOW_INBOX_URL", help=INBOX_HELP),
) -> None:
    """List recent zap runs, one per event and zap: state, duration, failing step."""
    from flows.history import recent_runs
    from flows.intake.db import InboxError

    try:
        rows = asyncio.run(recent_runs(limit, zap, inbox_url=inbox_url, waiting=waiting))
    except InboxError as exc:
        raise fail(str(exc)) from None
    # On a narrow terminal the messages go under the table, whole, rather than squeeze the
    # columns that identify a run.
    narrow = out.width < NARROW
    columns = [
        Column("event", no_wrap=True, min_width=12),
        Column("zap", min_width=8, overflow="fold"),  # whole, on as many lines as it takes
        Column("state", no_wrap=True, min_width=9),
        Column("started", no_wrap=True, min_width=14),
        Column("took", no_wrap=True, min_width=6),
        Column("failing step", min_width=8),
        Column("message", overflow="ellipsis", no_wrap=True, max_width=40),
    ]
    if narrow:  # without "took" and "message", in a table without borders
        del columns[4], columns[-1]
    table = Table(*columns, box=box.SIMPLE_HEAD if narrow else box.HEAVY_HEAD)
    for row in rows:
        took = f"{row.duration.total_seconds():.2f} s" if row.duration else "-"
        started = row.started.strftime("%m-%d %H:%M:%S") if row.started else "-"
        colour = {"Completed": "green", "Failed": "red", "Filtered": "yellow"}.get(
            row.state, "cyan" if row.state.startswith("Waiting") else ""
        )
        state = row.state.replace("until ", "until\n") if narrow else row.state  # two lines
        state = f"[{colour}]{state}[/{colour}]" if colour else state
        if narrow:
            table.add_row(row.event_id[:12], row.zap, state, started, row.failing_step or "")
        else:
            table.add_row(
                row.event_id[:12],
                row.zap,
                state,
                started,
                took,
                row.failing_step or "",
                row.message,
            )
    out.print(table)
    if narrow:
        for row in rows:
            if row.message:
                out.print(f"{row.event_id[:12]} {row.zap}: {row.message}", markup=False)
    if not rows:
        out.print("no run waits in a delay" if waiting else "no zap runs yet")
    kept = asyncio.run(_unrecognised_waiting(inbox_url))
    if kept:
        out.print(
            f"[yellow]{kept} deliveries kept as unrecognised[/yellow] (their app could not "
            "read them yet): zapflow events --unrecognised"
        )


async def _unrecognised_waiting(inbox_url: str | None) -> int:
    from flows.intake import unrecognised
    from flows.intake.inbox import Inbox

    async with await Inbox.open(inbox_url) as inbox:
        return await unrecognised.waiting_count(inbox)


@app.command()
def events(
    ids: list[str] = typer.Argument(
        None, metavar="[ID]...", help="Show these kept deliveries in full (ids or first characters)"
    ),
    waiting: bool = typer.Option(
        False, "--unrecognised", help="List the deliveries kept as unrecognised, still waiting"
    ),
    every: bool = typer.Option(False, "--all", help="With --unrecognised: reprocessed ones too"),
    app_name: str = typer.Option(None, "--app", help="Only this app's deliveries"),
    limit: int = typer.Option(50, "--limit", "-n", help="How many, oldest first"),
    inbox_url: str = typer.Option(None, "--inbox", envvar="ZAPFLOW_INBOX_URL", help=INBOX_HELP),
) -> None:
    """Deliveries kept as unrecognised: an app's sender delivered them, the app could not read
    them yet. List them (--unrecognised) or show some in full (IDs)."""
    from flows.intake import unrecognised
    from flows.intake.inbox import Inbox

    if not ids and not waiting:
        raise fail("give delivery IDs to show, or --unrecognised to list them")

    async def fetch() -> list[Any]:
        async with await Inbox.open(inbox_url) as inbox:
            return await unrecognised.listing(
                inbox,
                limit=0 if ids else limit,
                app=app_name,
                waiting_only=not (ids or every),
                ids=ids or None,
            )

    try:
        found = asyncio.run(fetch())
    except ZapError as exc:
        raise fail(str(exc)) from None
    if ids:
        if not found:
            raise fail(f"no kept delivery has an id starting with {', '.join(ids)}")
        for item in found:
            out.print(f"[bold]{item.id}[/bold]  {item.state}")
            out.print(f"  {item.app} connection {item.connection}, channel {item.channel}")
            out.print(f"  received {item.received_at:%Y-%m-%d %H:%M:%S} UTC")
            out.print(f"  reason: {item.reason}", markup=False)
            if item.event_ids:
                out.print(f"  made events: {', '.join(i[:12] for i in item.event_ids)}")
            out.print(json.dumps(item.body, indent=2, ensure_ascii=False), markup=False)
        return
    table = Table(
        Column("id", no_wrap=True, min_width=12),
        Column("received", no_wrap=True, min_width=14),
        Column("app", no_wrap=True),
        Column("connection/channel", no_wrap=True),
        Column("state", no_wrap=True),
        Column("reason", overflow="ellipsis", no_wrap=True, max_width=70),
    )
    for item in found:
        table.add_row(
            item.id[:12],
            item.received_at.strftime("%m-%d %H:%M:%S"),
            item.app,
            f"{item.connection}/{item.channel}",
            item.state,
            item.reason,
        )
    out.print(table)
    if not found:
        out.print("no deliveries kept as unrecognised")
    else:
        out.print("zapflow events ID shows one in full; zapflow reprocess ID… reads them again")


@app.command()
def reprocess(
    ids: list[str] = typer.Argument(
        None, metavar="[ID]...", help="Kept deliveries to read again (ids or first characters)"
    ),
    waiting: bool = typer.Option(
        False, "--unrecognised", help="Every delivery kept as unrecognised that still waits"
    ),
    app_name: str = typer.Option(None, "--app", help="With --unrecognised: only this app's"),
    connection: str = typer.Option(
        None, "--connection", help="With --unrecognised: only this connection's"
    ),
    inbox_url: str = typer.Option(None, "--inbox", envvar="ZAPFLOW_INBOX_URL", help=INBOX_HELP),
) -> None:
    """Read deliveries kept as unrecognised again (after a connector fix, or a subscription put
    right); those read now become events that `zapflow serve` runs as usual."""
    from flows.intake import unrecognised
    from flows.intake.inbox import Inbox

    if bool(ids) == waiting:
        raise fail("give delivery IDs, or --unrecognised (with --app / --connection) for all")

    async def go() -> list[Any]:
        async with await Inbox.open(inbox_url) as inbox:
            found = await unrecognised.listing(
                inbox,
                limit=0,
                app=app_name,
                connection=connection,
                waiting_only=not ids,
                ids=ids or None,
            )
            if ids and not found:
                raise ZapError(f"no kept delivery has an id starting with {', '.join(ids)}")
            return await unrecognised.reprocess(inbox, found)

    try:
        outcomes = asyncio.run(go())
    except ZapError as exc:
        raise fail(str(exc)) from None
    still = 0
    for o in outcomes:
        d = o.delivery
        what = f"{d.id[:12]} ({d.app} {d.connection}/{d.channel})"
        if o.error is not None:
            still += 1
            out.print(f"[yellow]{what}: still cannot be read[/yellow]: {o.error}")
        else:
            made = ", ".join(f"{e.app}.{e.trigger} {e.id[:12]}" for e in o.events) or "nothing"
            out.print(f"[green]{what}[/green] → {made}")
    if not outcomes:
        out.print("no deliveries wait as unrecognised")
    elif len(outcomes) > still:
        out.print("their zaps run in `zapflow serve` (now, if it is running; else when it starts)")
    if still:
        raise typer.Exit(1)


@app.command()
def held(
    zap: str = typer.Option(None, "--zap", help="Only this zap's held runs"),
    inbox_url: str = typer.Option(None, "--inbox", envvar="ZAPFLOW_INBOX_URL", help=INBOX_HELP),
) -> None:
    """List the runs flood protection holds (oldest first): `zapflow release` runs them,
    `zapflow discard` drops them."""
    from flows.intake.inbox import Inbox

    async def listing() -> list[Any]:
        async with await Inbox.open(inbox_url) as inbox:
            return await inbox.held_runs(zap)

    rows = asyncio.run(listing())
    table = Table(
        Column("event", no_wrap=True, min_width=12),
        Column("zap", min_width=8),
        Column("trigger", min_width=8),
        Column("held since", no_wrap=True, min_width=14),
    )
    for row in rows:
        trigger = f"{row.app}.{row.trigger}" if row.app else ""
        table.add_row(row.event_id[:12], row.zap, trigger, f"{row.started_at:%m-%d %H:%M:%S}")
    out.print(table)
    by_zap: dict[str, int] = {}
    for row in rows:
        by_zap[row.zap] = by_zap.get(row.zap, 0) + 1
    if not rows:
        out.print("no run is held")
    else:
        out.print(
            ", ".join(f"{n} held for {z}" for z, n in sorted(by_zap.items()))
            + ": `zapflow release --zap ID` runs them, `zapflow discard --zap ID` drops them"
        )


def _let_go(
    action: str, zap: str | None, event_ids: list[str], every: bool, inbox_url: str | None
) -> None:
    from flows.intake.inbox import Inbox

    if not (zap or event_ids or every):
        raise fail(f"say which held runs to {action}: --zap ID, EVENT ids, or --all")

    async def go() -> int:
        async with await Inbox.open(inbox_url) as inbox:
            return await inbox.let_go(action, zap=zap, event_ids=event_ids)

    count = asyncio.run(go())
    what = {"release": "released: `zapflow serve` runs them now", "discard": "discarded"}
    out.print(f"{count} held event(s) {what[action]}" if count else "no held run matched")


@app.command()
def release(
    event_ids: list[str] = typer.Argument(None, metavar="[EVENT]...", help="Full event ids"),
    zap: str = typer.Option(None, "--zap", help="Every held run of this zap"),
    every: bool = typer.Option(False, "--all", help="Every held run"),
    inbox_url: str = typer.Option(None, "--inbox", envvar="ZAPFLOW_INBOX_URL", help=INBOX_HELP),
) -> None:
    """Run the runs flood protection held (a running `zapflow serve` starts them at once)."""
    _let_go("release", zap, event_ids or [], every, inbox_url)


@app.command()
def discard(
    event_ids: list[str] = typer.Argument(None, metavar="[EVENT]...", help="Full event ids"),
    zap: str = typer.Option(None, "--zap", help="Every held run of this zap"),
    every: bool = typer.Option(False, "--all", help="Every held run"),
    inbox_url: str = typer.Option(None, "--inbox", envvar="ZAPFLOW_INBOX_URL", help=INBOX_HELP),
) -> None:
    """Drop the runs flood protection held: they never run (the ledger says discarded)."""
    _let_go("discard", zap, event_ids or [], every, inbox_url)


@app.command()
def resume(
    event_ref: str = typer.Argument(
        ..., metavar="EVENT", help="The waiting run's event id (or its first characters)"
    ),
    zap: str = typer.Option(None, "--zap", help="Which zap's run, if the event has several"),
    inbox_url: str = typer.Option(None, "--inbox", envvar="ZAPFLOW_INBOX_URL", help=INBOX_HELP),
) -> None:
    """End a waiting run's delay now: `zapflow serve` runs its next steps within a second."""
    from flows.history import resume_waiting

    try:
        run, was = asyncio.run(resume_waiting(event_ref, zap=zap, inbox_url=inbox_url))
    except ZapError as exc:
        raise fail(str(exc)) from None
    out.print(
        f"{run.zap} on {run.event_id}: its delay (until {was:%Y-%m-%d %H:%M:%S} UTC) ends now; "
        "`zapflow serve` runs its next steps"
    )


@app.command()
def cancel(
    event_ref: str = typer.Argument(
        ..., metavar="EVENT", help="The waiting run's event id (or its first characters)"
    ),
    zap: str = typer.Option(None, "--zap", help="Which zap's run, if the event has several"),
    inbox_url: str = typer.Option(None, "--inbox", envvar="ZAPFLOW_INBOX_URL", help=INBOX_HELP),
) -> None:
    """Cancel a run waiting in a delay: its later steps never run."""
    from flows.history import cancel_waiting

    with prefect_api():
        try:
            run = asyncio.run(cancel_waiting(event_ref, zap=zap, inbox_url=inbox_url))
        except ZapError as exc:
            raise fail(str(exc)) from None
    out.print(f"{run.zap} on {run.event_id}: cancelled; its later steps will not run")


@app.command()
def replay(
    event_ref: str = typer.Argument(
        None, metavar="[EVENT]", help="The run's event id (or its first characters: `zapflow runs`)"
    ),
    zap: str = typer.Option(None, "--zap", help="Which zap's run (with --failed: whose runs)"),
    from_start: bool = typer.Option(
        False, "--from-start", help="Run every step again, as a new run with a new event id"
    ),
    version: str = typer.Option(
        "current",
        "--zap-version",
        help="current: the zap's file now; recorded: the version the run ran",
    ),
    failed: bool = typer.Option(False, "--failed", help="Replay every failed run of --zap"),
    since: str = typer.Option(None, "--since", help="With --failed: runs started within, e.g. 2h"),
    zaps: Path = ZapsOption,
    inbox_url: str = typer.Option(None, "--inbox", envvar="ZAPFLOW_INBOX_URL", help=INBOX_HELP),
) -> None:
    """Run a recorded zap run again on its stored event: from its failed step (the steps before
    it are not run again), or --from-start."""
    from pydantic import TypeAdapter, ValidationError

    from flows.history import Replayed, replay_failed
    from flows.history import replay as replay_run
    from flows.model import Duration

    if version not in ("current", "recorded"):
        raise fail(f"--zap-version is current or recorded, not {version!r}")
    if failed == bool(event_ref):
        raise fail("give an EVENT, or --failed --zap ID (every failed run of a zap)")
    if failed and not zap:
        raise fail("--failed needs --zap ID: whose failed runs to replay")
    window = None
    if since is not None:
        if not failed:
            raise fail("--since goes with --failed")
        try:
            window = TypeAdapter(Duration).validate_python(since)
        except ValidationError:
            raise fail(f"--since {since!r} is not a duration (e.g. 30m, 2h, 1d)") from None
    with prefect_api() as url:
        try:
            if failed:
                done = asyncio.run(
                    replay_failed(
                        zap,
                        [zaps],
                        since=window,
                        inbox_url=inbox_url,
                        from_start=from_start,
                        version=version,
                    )
                )
            else:
                done = [
                    asyncio.run(
                        replay_run(
                            event_ref,
                            [zaps],
                            zap=zap,
                            inbox_url=inbox_url,
                            from_start=from_start,
                            version=version,
                        )
                    )
                ]
        except ZapError as exc:
            raise fail(str(exc)) from None
        bad = 0
        for item in done:
            if not isinstance(item, Replayed):
                run, error = item
                err.print(f"{run.zap} on {run.event_id}: not replayed: {error}", markup=False)
                bad += 1
                continue
            out.print(
                f"replayed {item.zap.zap} on event {item.old.event_id} (was {item.old.state}) "
                f"{item.how}"
                + ("" if item.event.id == item.old.event_id else f" as event {item.event.id}")
            )
            _report_state(item.state, url, item.event.id)
            bad += 0 if item.state.is_completed() else 1
        if failed:
            out.print(f"{len(done)} failed run(s) of {zap} replayed; {len(done) - bad} completed")
    if bad:
        raise typer.Exit(1)
