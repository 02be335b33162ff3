"""The ``zapflow`` command line: validate, explore apps, test and run zaps, read run history."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Column, Table

from connectors._errors import ZapError
from flows.errors import ZapValidationError

app = typer.Typer(
    name="zapflow",
    help="Self-hosted zaps: YAML automations compiled into Prefect flows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
server_app = typer.Typer(
    help="zapflow's own Prefect server (run history and UI).", no_args_is_help=True
)
app.add_typer(server_app, name="server")
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

DEFAULT_ZAPS = Path("zaps")
ZapsOption = typer.Option(DEFAULT_ZAPS, "--zaps", help="Folder to look zaps up in by id")
INBOX_HELP = "SQLAlchemy URL of the inbox and run ledger (default: SQLite in the state folder)"


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", markup=True, highlight=False)
    return typer.Exit(code)


# --------------------------------------------------------------------------- validate, schema


@app.command()
def validate(
    paths: list[Path] = typer.Argument(None, help="Zap files or folders (default: ./zaps)"),
) -> None:
    """Check zap files: YAML, schema, apps, inputs, templates. Lists every problem found."""
    from flows.loader import find_zap_files, load_all

    targets = paths or [DEFAULT_ZAPS]
    missing = [p for p in targets if not p.exists()]
    for path in missing:
        err.print(f"{path}: no such file or folder", markup=False)
    present = [p for p in targets if p.exists()]
    loaded, problems = load_all(present)
    for problem in problems:
        err.print(str(problem), markup=False)
    files = len(find_zap_files(present))
    if problems or missing:
        err.print(f"[red]{len(problems) + len(missing)} problem(s)[/red] in {files} file(s)")
        raise typer.Exit(1)
    if not files:
        raise fail("no zap files found (*.yaml, *.yml)")
    from flows.intake.folder import zap_secret

    for item in loaded:
        try:
            zap_secret(item.zap)
        except ZapError as exc:  # valid, but `zapflow serve` here would not serve it
            err.print(
                f"warning: {item.file}: {exc}: `zapflow serve` will not serve it", markup=False
            )
    out.print(f"[green]ok[/green]: {len(loaded)} zap(s) valid")


@app.command()
def schema(
    output: Path = typer.Option(None, "--output", "-o", help="Write to this file, not stdout"),
) -> None:
    """Print the JSON Schema of a zap file, for editors (yaml-language-server)."""
    from flows.reference import schema_text

    text = schema_text()
    if output:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {output}")
    else:
        sys.stdout.write(text)


# --------------------------------------------------------------------------- apps, docs


@app.command()
def apps(name: str = typer.Argument(None, help="Show one app with every field")) -> None:
    """List installed apps with their triggers and actions, or show one app in full."""
    from connectors import registry
    from flows.reference import field_tables

    if name is None:
        table = Table("app", "triggers", "actions", show_lines=True)
        for found in registry.apps().values():
            table.add_row(
                f"[bold]{found.name}[/bold]\n{found.title}",
                "\n".join(found.triggers) or "-",
                "\n".join(found.actions) or "-",
            )
        out.print(table)
        out.print("Show one app with its fields: zapflow apps NAME")
        return
    try:
        chosen = registry.app(name)
    except registry.UnknownName as exc:
        raise fail(str(exc)) from None

    def show(title: str, model: Any, mode: str = "validation") -> None:
        for ft in field_tables(model, mode):
            table = Table(
                "field", "type", "req", "description", title=ft.title or None, title_justify="left"
            )
            for row in ft.rows:
                table.add_row(row.name, row.type, "yes" if row.required else "", row.description)
            out.print(f"  {title}" + (f" [dim](transform {ft.title})[/dim]" if ft.title else ""))
            out.print(table)

    out.print(f"[bold]{chosen.title}[/bold] ({chosen.name})  {chosen.description}")
    if chosen.connection is not None:
        show("connection", chosen.connection)
    for trig in chosen.triggers.values():
        out.print(f"\n[bold cyan]trigger {trig.name}[/bold cyan] — {trig.title} ({trig.kind})")
        out.print(f"  {trig.description}")
        if trig.options_model is not None:
            show("options", trig.options_model)
        show("payload", trig.payload_model, "serialization")
    for action in chosen.actions.values():
        out.print(f"\n[bold green]action {action.key}[/bold green] — {action.title}")
        out.print(f"  {action.description}")
        show("input", action.input_model)
        show("output", action.output_model, "serialization")


@app.command()
def docs(
    folder: Path = typer.Option(Path("docs"), "--folder", help="Where to write"),
    check: bool = typer.Option(False, "--check", help="Only check the files are up to date"),
) -> None:
    """Write the generated docs: apps/<app>.md reference pages and zap.schema.json."""
    from flows.reference import generated_docs

    pages = generated_docs()
    stale = []
    for name, text in pages.items():
        page = folder / name
        if page.exists() and page.read_text(encoding="utf-8") == text:
            continue
        stale.append(page)
        if not check:
            page.parent.mkdir(parents=True, exist_ok=True)
            page.write_text(text, encoding="utf-8")
    if check and stale:
        raise fail(f"out of date: {', '.join(map(str, stale))}; run `zapflow docs`")
    verb = "checked" if check else "wrote"
    out.print(f"{verb} {len(pages)} file(s) in {folder} ({len(stale)} changed)")


# --------------------------------------------------------------------------- test, run


def resolve_zap(ref: str, zaps: Path) -> Any:
    """A zap by file path, or by id among the zap files under ``zaps``."""
    from flows.loader import load_all, load_zap_file

    path = Path(ref)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise fail(f"{path}: no such file")
        return load_zap_file(path).zap
    from flows.model import with_failure_zaps

    loaded, problems = load_all([zaps] if zaps.exists() else [])
    for zap in with_failure_zaps(item.zap for item in loaded):
        if zap.zap == ref:
            return zap
    broken = [p for p in problems if Path(p.file).stem == ref]
    if broken:
        raise ZapValidationError(broken)
    known = ", ".join(sorted(z.zap.zap for z in loaded)) or "none"
    raise fail(f"no zap {ref!r} in {zaps}/ (zaps there: {known})")


def read_event(
    zap: Any, event_file: Path | None, sample: int | None, wire: str | None = None
) -> Any:
    """The event to run on: a payload file (JSON or YAML), or one of the trigger's samples.

    With ``wire`` the file is a raw delivery as the app posts it to its hook
    (``/hooks/<app>/<connection>/<token>/<wire>``), read by the app's webhook adapter exactly as
    the receiver reads it."""
    import yaml

    from connectors import registry
    from flows.runtime import Event

    trigger = registry.trigger(zap.trigger.app, zap.trigger.event)
    if wire is not None and event_file is None:
        raise fail("--wire reads a raw delivery: give it with --event FILE")
    if event_file is not None:
        try:
            payload = yaml.safe_load(event_file.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise fail(f"{event_file}: cannot read the event: {exc}") from None
        if wire is not None:
            payload = _read_delivery(zap, event_file, payload, wire, sample)
        elif not isinstance(payload, dict):
            raise fail(f"{event_file}: an event must be a JSON/YAML object of trigger fields")
        else:
            _refuse_a_delivery(zap, trigger, event_file, payload)
    else:
        samples = zap.trigger.samples or list(trigger.samples)
        index = (sample or 1) - 1
        if not 0 <= index < len(samples):
            raise fail(f"zap {zap.zap!r} has {len(samples)} sample event(s); use --sample 1..")
        payload = samples[index]
    return Event(app=trigger.app, trigger=trigger.name, payload=payload)


def _read_delivery(zap: Any, event_file: Path, body: Any, channel: str, index: int | None) -> Any:
    """The trigger payload a raw delivery yields for ``zap``, through its app's webhook adapter."""
    from connectors import registry

    owner = registry.app(zap.trigger.app)
    if owner.webhook is None:
        raise fail(
            f"--wire: {owner.name} receives no webhook deliveries (its trigger "
            f"{zap.trigger.event!r} is not delivered to an app hook); give --event the trigger's "
            "fields instead"
        )
    try:
        result = owner.webhook(channel, body)
    except Exception as exc:  # what the receiver would keep as unrecognised
        reason = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
        raise fail(
            f"{event_file}: {owner.name} cannot read this delivery on channel {channel!r}: "
            f"{reason}. `zapflow serve` would keep it as unrecognised (200), for "
            "`zapflow reprocess` once the reading is extended"
        ) from None
    if not isinstance(result, list):
        raise fail(
            f"{event_file}: this delivery is not an event but one {owner.name} answers itself "
            "(a URL verification challenge): it starts no zap"
        )
    wanted = [item for item in result if item.trigger == zap.trigger.event]
    if not wanted:
        got = ", ".join(sorted({item.trigger for item in result})) or "no event"
        raise fail(
            f"{event_file}: this delivery is {got}, but zap {zap.zap!r} starts on "
            f"{owner.name} {zap.trigger.event}: it would not run this zap"
        )
    pick = (index or 1) - 1
    if not 0 <= pick < len(wanted):
        raise fail(
            f"{event_file}: the delivery holds {len(wanted)} such event(s); use --sample 1.."
        )
    if len(wanted) > 1:
        err.print(
            f"note: the delivery holds {len(wanted)} {zap.trigger.event} events; "
            f"testing number {pick + 1} (--sample N picks another)"
        )
    return wanted[pick].payload


def _refuse_a_delivery(zap: Any, trigger: Any, event_file: Path, payload: dict[str, Any]) -> None:
    """A raw delivery given as trigger fields: say to add --wire, rather than fail on fields."""
    from pydantic import ValidationError

    from connectors import registry

    owner = registry.app(zap.trigger.app)
    if owner.webhook is None:
        return
    try:
        trigger.payload_model.model_validate(payload)
        return
    except ValidationError:
        pass
    channels = [
        c
        for c in getattr(owner, "hook_channels", ()) or _channels_of(owner.name)
        if _delivers(owner, c, payload, zap.trigger.event)
    ]
    if channels:
        raise fail(
            f"{event_file}: this is a raw {owner.name} delivery (as `zapflow sandbox emit` "
            f"prints it), not {zap.trigger.event}'s fields: add `--wire {channels[0]}` to read "
            "it as the receiver does"
        )


def _channels_of(app_name: str) -> tuple[str, ...]:
    from connectors import registry

    return registry.app(app_name).webhook_channels


def _delivers(owner: Any, channel: str, payload: Any, trigger: str) -> bool:
    try:
        result = owner.webhook(channel, payload)
    except Exception:
        return False
    return isinstance(result, list) and any(item.trigger == trigger for item in result)


def _show_json(label: str, value: Any) -> None:
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    out.print(f"    [dim]{label}:[/dim] " + text.replace("\n", "\n    "), markup=True)


def print_outcome(outcome: Any) -> None:
    marks = {
        "completed": "[green]✓[/green]",
        "skipped": "[yellow]–[/yellow]",
        "failed": "[red]✗[/red]",
        "sampled": "[blue]○[/blue]",
    }
    for rec in outcome.steps:
        note = {"sampled": " (dry run: sample output, app not called)"}.get(rec.status, "")
        out.print(
            f"{marks[rec.status]} [bold]{rec.id}[/bold] {rec.action} "
            f"[dim]{rec.seconds * 1000:.1f} ms[/dim]{note}"
        )
        if rec.status == "skipped":
            out.print(f"    [dim]skipped: {rec.error}[/dim]")
            continue
        if rec.input is not None:
            _show_json("input", rec.input)
        if rec.status == "failed":
            out.print(f"    [red]{rec.error}[/red]", markup=True)
        else:
            _show_json("output", rec.output)
    colour = {"completed": "green", "filtered": "yellow", "failed": "red"}[outcome.status]
    suffix = f": {outcome.message}" if outcome.message else ""
    out.print(f"[{colour}]{outcome.status}[/{colour}]{suffix}")


EventOption = typer.Option(None, "--event", "-e", help="Trigger payload file (JSON or YAML)")
SampleOption = typer.Option(None, "--sample", "-s", help="Use the trigger's Nth sample (from 1)")
WireOption = typer.Option(
    None,
    "--wire",
    metavar="CHANNEL",
    help="The --event file is a raw delivery as the app posts it to its hook channel (for "
    "CINNOX the event family: inquiry, external-contact, outbound-sms, label), read as the "
    "receiver reads it",
)


@app.command("test")
def test_zap(
    zap: str = typer.Argument(..., help="Zap file, or zap id under --zaps"),
    event: Path = EventOption,
    sample: int = SampleOption,
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Render and validate every step without calling any app"
    ),
    wire: str = WireOption,
    zaps: Path = ZapsOption,
) -> None:
    """Run a zap once, here, and print each step's rendered input and output.

    Without --event it uses the trigger's sample. No run history is recorded; delays do not
    wait; each step runs once (retries apply under serve). With --dry-run no app is called
    (pure tools still run) and nothing needs a server.
    """
    from flows.runtime import ZapRun

    try:
        model = resolve_zap(zap, zaps)
        trigger_event = read_event(model, event, sample, wire)
        _note_retries(model)
        run = ZapRun(model, trigger_event, dry_run=dry_run, testing=True)
        outcome = asyncio.run(run.execute())
    except ZapValidationError as exc:
        for problem in exc.problems:
            err.print(str(problem), markup=False)
        raise typer.Exit(1) from None
    except ZapError as exc:
        raise fail(str(exc)) from None
    print_outcome(outcome)
    if outcome.status == "failed":
        raise typer.Exit(1)


def _note_retries(zap: Any) -> None:
    """``zapflow test`` tries each step once: say so where the zap file asks for retries."""
    from flows.model import ActionStep

    asked = zap.defaults.retries is not None and zap.defaults.retries > 0
    retried = [
        scope.step.id
        for scope in zap.walk()
        if isinstance(scope.step, ActionStep)
        and (scope.step.retries if scope.step.retries is not None else (asked or None))
    ]
    if retried:
        err.print(
            f"note: zapflow test runs each step once; the retries: of {', '.join(retried)} "
            "apply under zapflow serve and zapflow run"
        )


@contextmanager
def prefect_api() -> Iterator[str]:
    """Run history: the configured Prefect server, or zapflow's own (started if needed)."""
    from flows import server

    try:
        url = server.ensure_api()
    except server.ServerError as exc:
        raise fail(str(exc)) from None
    with server.using_api(url):
        yield url


def _report_state(state: Any, api_url: str, event_id: str) -> None:
    from flows import server

    run_id = state.state_details.flow_run_id
    colour = "green" if state.is_completed() else "red"
    out.print(f"[{colour}]{state.name}[/{colour}] {state.message or ''}".rstrip())
    out.print(
        f"event {event_id}, flow run {run_id}: {server.ui_url(api_url)}/runs/flow-run/{run_id}"
    )


@app.command()
def run(
    zap: str = typer.Argument(..., help="Zap file, or zap id under --zaps"),
    event: Path = EventOption,
    sample: int = SampleOption,
    wire: str = WireOption,
    zaps: Path = ZapsOption,
) -> None:
    """Run a zap once as a Prefect flow run, with full run history (retries, logs, UI)."""
    from flows.history import run_and_record

    try:
        model = resolve_zap(zap, zaps)
        if not model.enabled:
            err.print(f"note: zap {model.zap!r} is disabled (enabled: false); running it anyway")
        trigger_event = read_event(model, event, sample, wire)
    except ZapValidationError as exc:
        for problem in exc.problems:
            err.print(str(problem), markup=False)
        raise typer.Exit(1) from None
    with prefect_api() as url:
        state = asyncio.run(run_and_record(model, trigger_event))
        _report_state(state, url, trigger_event.id)
    if not state.is_completed():
        raise typer.Exit(1)


# --------------------------------------------------------------------------- history


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
    from flows.intake.inbox import InboxError

    try:
        rows = asyncio.run(recent_runs(limit, zap, inbox_url=inbox_url, waiting=waiting))
    except InboxError as exc:
        raise fail(str(exc)) from None
    table = Table(
        Column("event", no_wrap=True, min_width=12),
        Column("zap", min_width=8),
        Column("state", no_wrap=True, min_width=9),
        Column("started", no_wrap=True, min_width=14),
        Column("took", no_wrap=True, min_width=6),
        Column("failing step", min_width=8),
        Column("message", overflow="ellipsis", no_wrap=True, max_width=40),
    )
    for row in rows:
        took = f"{row.duration.total_seconds():.2f} s" if row.duration else "-"
        started = row.started.strftime("%m-%d %H:%M:%S") if row.started else "-"
        colour = {"Completed": "green", "Failed": "red", "Filtered": "yellow"}.get(
            row.state, "cyan" if row.state.startswith("Waiting") else ""
        )
        state = f"[{colour}]{row.state}[/{colour}]" if colour else row.state
        table.add_row(
            row.event_id[:12], row.zap, state, started, took, row.failing_step or "", row.message
        )
    out.print(table)
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
) -> None:
    """Run everything: receiver, inbox, dispatcher, following ZAP_DIR; Ctrl-C stops gracefully."""
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
    if inbox_url:  # the storage app keeps its values in the same database
        os.environ["ZAPFLOW_INBOX_URL"] = inbox_url
    with prefect_api() as url:
        from flows import server

        out.print(f"run history: {server.ui_url(url)}")
        for warning in server.version_warnings(url):
            err.print(f"warning: {warning}", markup=False)
        serve_until_signalled(
            folder,
            host=host,
            port=port,
            public_url=public_url,
            inbox_url=inbox_url,
            concurrency=concurrency,
            live_idle=live_idle,
            max_body=body_limit,
            retention=keep or None,
            report=lambda text: out.print(text, markup=False),
        )


# --------------------------------------------------------------------------- connections

connections_app = typer.Typer(
    help="Connections: named credentials of app accounts (secrets masked).",
    invoke_without_command=True,
)
app.add_typer(connections_app, name="connections")
SetOption = typer.Option(
    None, "--set", help="FIELD=VALUE; VALUE may be env:VAR to read an environment variable"
)


def _app_with_connection(name: str) -> Any:
    from connectors import registry

    try:
        found = registry.app(name)
    except registry.UnknownName as exc:
        raise fail(str(exc)) from None
    if found.connection is None:
        raise fail(f"app {name!r} needs no connection")
    return found


def _collect_values(found: Any, given: list[str], only: set[str] | None = None) -> dict[str, Any]:
    """Field values from --set, the environment (env:VAR), or prompts (hidden for secrets)."""
    import os

    from flows.connections import secret_fields

    values: dict[str, Any] = {}
    for item in given or []:
        field, sep, value = item.partition("=")
        if not sep or field not in found.connection.model_fields:
            allowed = ", ".join(found.connection.model_fields)
            raise fail(f"--set {field!r}: expected FIELD=VALUE with FIELD one of: {allowed}")
        if value.startswith("env:"):
            if value[4:] not in os.environ:
                raise fail(f"--set {field}: environment variable {value[4:]} is not set")
            value = os.environ[value[4:]]
        values[field] = value
    secrets = secret_fields(found.connection)
    for field, info in found.connection.model_fields.items():
        if field in values or (only is not None and field not in only):
            continue
        optional = not info.is_required()
        if not _at_terminal():
            if optional:
                continue  # its default applies
            raise fail(f"{field} is missing: give --set {field}=... (no terminal to ask)")
        question = (info.description or field) + (" (optional: Enter to skip)" if optional else "")
        value = typer.prompt(
            question,
            hide_input=field in secrets,
            default="" if optional else None,
            show_default=False,
        )
        if value != "" or not optional:
            values[field] = value
    return values


def _at_terminal() -> bool:
    """Whether someone can answer questions (not CI, a pipe or a script)."""
    return sys.stdin.isatty()


async def _check(found: Any, name: str, connection: Any) -> str:
    if found.check is None:
        return "no check declared for this app"
    return await found.check(connection, name)


def _verify(found: Any, name: str, connection: Any) -> None:
    from connectors._errors import ConnectorError

    try:
        note = asyncio.run(_check(found, name, connection))
    except ConnectorError as exc:
        raise fail(f"{found.title} did not accept connection {name!r}: {exc}") from None
    out.print(f"[green]checked[/green]: {note}")


@app.command()
def connect(
    app_name: str = typer.Argument(..., metavar="APP", help="The app, e.g. cinnox"),
    name: str = typer.Argument(..., help="A name for this account, e.g. main"),
    values: list[str] = SetOption,
    check: bool = typer.Option(True, "--check/--no-check", help="Prove it with a real call"),
    replace: bool = typer.Option(False, "--replace", help="Overwrite an existing one"),
) -> None:
    """Add a connection (asks for each field, secrets hidden), check it, store it encrypted."""
    from flows import connections

    found = _app_with_connection(app_name)
    try:
        connections.check_name(name)
    except connections.ConnectionProblem as exc:
        raise fail(str(exc)) from None
    connection = _validated(found, name, _collect_values(found, values))
    if check:
        _verify(found, name, connection)
    with prefect_api():
        existing = asyncio.run(connections.load_block(found, name))
        if existing is not None and not replace:
            raise fail(f"connection {app_name}/{name} exists; use --replace or `connections rekey`")
        asyncio.run(connections.save_block(found, name, connection, overwrite=True))
    out.print(f"saved connection {app_name}/{name} (secrets encrypted by the Prefect server)")


def _validated(found: Any, name: str, values: dict[str, Any]) -> Any:
    from flows import connections

    try:
        return connections.validate(found, name, values)
    except connections.ConnectionProblem as exc:
        raise fail(str(exc)) from None


@connections_app.callback()
def connections_list(
    ctx: typer.Context,
    app_name: str = typer.Option(None, "--app", help="Only this app's connections"),
) -> None:
    """List connections (from the Prefect server and the environment), secrets masked."""
    if ctx.invoked_subcommand is not None:
        return
    from connectors import registry
    from flows import connections

    apps = registry.apps()
    with prefect_api():
        rows = asyncio.run(connections.block_connections(apps))
    for owner, name in connections.env_connections(apps):
        shown = connections.from_env(owner, name)
        if shown is not None:
            rows.append(
                connections.ConnectionInfo(
                    owner.name, name, "environment", connections.masked(shown)
                )
            )
    rows = [r for r in rows if app_name in (None, r.app)]
    table = Table("app", "name", "stored in", "fields")
    for row in sorted(rows, key=lambda r: (r.app, r.name)):
        table.add_row(
            row.app, row.name, row.source, "  ".join(f"{k}={v}" for k, v in row.values.items())
        )
    out.print(table if rows else "no connections yet: zapflow connect APP NAME")


def _stored(found: Any, name: str) -> Any:
    from flows import connections

    connection = asyncio.run(connections.load_block(found, name))
    if connection is None:
        raise fail(f"no stored connection {found.name}/{name} (see `zapflow connections`)")
    return connection


@connections_app.command("show")
def connections_show(
    app_name: str = typer.Argument(..., metavar="APP"), name: str = typer.Argument(...)
) -> None:
    """Show one connection, secrets masked."""
    from flows import connections

    found = _app_with_connection(app_name)
    with prefect_api():
        connection = _stored(found, name)
    for field, value in connections.masked(connection).items():
        out.print(f"{field}: {value}")


def _zaps_using(app_name: str, name: str, zaps: Path) -> list[str]:
    from flows.loader import load_all
    from flows.model import ActionStep, failure_zap, step_connection

    loaded, _ = load_all([zaps] if zaps.exists() else [])
    users = []
    for item in loaded:
        zap = item.zap
        if not zap.enabled:
            continue
        used = {(zap.trigger.app, zap.trigger.connection)} | {
            (s.step.action.split(".")[0], step_connection(z, s.step))
            for z in (zap, failure_zap(zap))
            if z is not None
            for s in z.walk()
            if isinstance(s.step, ActionStep)
        }
        if (app_name, name) in used:
            users.append(f"{zap.zap} ({item.file})")
    return users


@connections_app.command("rename")
def connections_rename(
    app_name: str = typer.Argument(..., metavar="APP"),
    name: str = typer.Argument(...),
    new_name: str = typer.Argument(...),
    zaps: Path = ZapsOption,
) -> None:
    """Rename a connection (zaps that name the old one must be changed too)."""
    from flows import connections

    found = _app_with_connection(app_name)
    try:
        connections.check_name(new_name)
    except connections.ConnectionProblem as exc:
        raise fail(str(exc)) from None
    with prefect_api():
        connection = _stored(found, name)
        if asyncio.run(connections.load_block(found, new_name)) is not None:
            raise fail(f"connection {app_name}/{new_name} exists already")
        asyncio.run(connections.save_block(found, new_name, connection, overwrite=False))
        asyncio.run(connections.delete_block(found, name))
    out.print(f"renamed {app_name}/{name} to {app_name}/{new_name}")
    for user in _zaps_using(app_name, name, zaps):
        err.print(f"note: zap {user} still names connection {name!r}")


@connections_app.command("rekey")
def connections_rekey(
    app_name: str = typer.Argument(..., metavar="APP"),
    name: str = typer.Argument(...),
    values: list[str] = SetOption,
    check: bool = typer.Option(True, "--check/--no-check"),
) -> None:
    """Replace a connection's secrets (after "Regenerate" in the app), check, store."""
    from flows import connections

    found = _app_with_connection(app_name)
    with prefect_api():
        current = _stored(found, name)
        given = _collect_values(found, values, only=connections.secret_fields(found.connection))
        merged = current.model_dump()
        for field in connections.secret_fields(found.connection):
            merged[field] = getattr(current, field).get_secret_value()
        merged.update(given)
        connection = _validated(found, name, merged)
        if check:
            _verify(found, name, connection)
        asyncio.run(connections.save_block(found, name, connection, overwrite=True))
    out.print(f"re-keyed {app_name}/{name}")


@connections_app.command("delete")
def connections_delete(
    app_name: str = typer.Argument(..., metavar="APP"),
    name: str = typer.Argument(...),
    force: bool = typer.Option(False, "--force", help="Delete even if enabled zaps use it"),
    zaps: Path = ZapsOption,
) -> None:
    """Delete a stored connection; refused while enabled zaps use it, unless --force."""
    from flows import connections

    found = _app_with_connection(app_name)
    users = _zaps_using(app_name, name, zaps)
    if users and not force:
        listing = "\n  ".join(users)
        raise fail(
            f"enabled zaps use {app_name}/{name}:\n  {listing}\n"
            "disable or change them first, or use --force"
        )
    with prefect_api():
        if not asyncio.run(connections.delete_block(found, name)):
            raise fail(f"no stored connection {app_name}/{name}")
    out.print(f"deleted {app_name}/{name}")


# --------------------------------------------------------------------------- demo

DEMO_SHEETS = "demo-sheets"
"""The demo's folder of sheets, in the state folder (spreadsheet connection "sheets")."""
DEMO_REQUESTS: list[dict[str, Any]] = [
    {"Request": "R-2291", "Customer": "kelvin lee", "Mobile": "9876 5432", "Region": "HK"},
    {"Request": "R-2292", "Customer": "joyce lam", "Mobile": "+65 9123 4567", "Region": "SG"},
]
DEMO_DECISIONS = {"R-2291": "Approved", "R-2292": "Rejected"}


@contextmanager
def _demo_env(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block, then put back what was there."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None)
            if value is not None:
                os.environ[key] = value


@contextmanager
def _demo_peers() -> Iterator[tuple[Any, Any, Path]]:
    """The example zaps' peers, each as the connection the zaps name: the bundled CINNOX
    sandbox (cinnox "sandbox"), the Slack sandbox (slack "sandbox") and a folder of sheets in
    the state folder, emptied first (spreadsheet "sheets"). Yields them in that order."""
    import shutil

    # The demo is the product's showcase, so it knows its bundled sandboxes by name.
    from connectors.cinnox.sandbox import run_in_thread
    from connectors.slack.sandbox import run_in_thread as run_slack
    from flows import server

    sheets = server.state_dir() / DEMO_SHEETS
    shutil.rmtree(sheets, ignore_errors=True)
    sheets.mkdir(parents=True)
    with run_in_thread() as (_, control), run_slack() as slack:
        account = control.accounts()[0]
        env = {
            "ZAPFLOW_CINNOX_SANDBOX_APP_ID": account["appId"],
            "ZAPFLOW_CINNOX_SANDBOX_APP_TOKEN": account["appToken"],
            "ZAPFLOW_CINNOX_SANDBOX_BASE_URL": account["baseUrl"],
            "ZAPFLOW_SLACK_SANDBOX_BOT_TOKEN": slack.bot_token,
            "ZAPFLOW_SLACK_SANDBOX_WEBHOOK_URL": slack.webhook_url,
            "ZAPFLOW_SLACK_SANDBOX_API_BASE_URL": slack.api_base_url,
            "ZAPFLOW_SPREADSHEET_SHEETS_FOLDER": str(sheets),
        }
        with _demo_env(env):
            yield control, slack, sheets


@app.command()
def demo(
    zaps: Path = ZapsOption,
    keep_serving: bool = typer.Option(
        False, "--keep-serving", help="Keep serving after the demo events (Ctrl-C stops)"
    ),
) -> None:
    """`zapflow serve` on the example zaps, fed real deliveries: the bundled CINNOX sandbox
    sends its events, each catch hook gets its zap's sample payloads, a request sheet changes;
    shows the runs and what they did.

    The zaps' peers are started for the demo: the CINNOX sandbox (connection "sandbox"), the
    Slack sandbox (slack connection "sandbox") and a folder of sheets, .zapflow/demo-sheets/
    (spreadsheet connection "sheets"), where requests.xlsx is seeded and then edited. The demo
    ends by showing the zap runs, what the sandboxes received and the sheets' rows. Starts
    zapflow's own Prefect server unless PREFECT_API_URL is set; it keeps running afterwards so
    the runs can be browsed (stop it with `zapflow server stop`).
    """
    import re
    import threading
    from datetime import UTC, datetime

    from flows import server
    from flows.intake.serve import StopHandle, serve_in_thread, serve_until_signalled
    from flows.loader import load_all

    loaded, problems = load_all([zaps] if zaps.exists() else [])
    for problem in problems:
        err.print(str(problem), markup=False)
    if problems or not loaded:
        raise fail(f"the example zaps in {zaps}/ must all be valid, and there must be some")
    catch = {z.zap.zap: z.zap for z in loaded if z.zap.trigger.event == "catch_hook"}
    cinnox = [z.zap for z in loaded if z.zap.trigger.app == "cinnox" and z.zap.enabled]
    requests = _demo_request_zap([z.zap for z in loaded])
    port = _free_port()
    lines: list[str] = []
    announced = threading.Event()

    def report(text: str) -> None:
        out.print(text, markup=False)
        lines.append(text)
        if text.startswith("hooks:"):
            announced.set()

    with prefect_api() as url, _demo_peers() as (sandbox, slack, sheets):
        out.print(f"run history: {server.ui_url(url)}")
        if requests:
            _demo_seed_requests(sheets)
        started_at = datetime.now(UTC)
        stop = StopHandle()
        options: dict[str, Any] = {"port": port, "live_idle": 1.0, "report": report}
        failure: list[BaseException] = []

        def failed(exc: BaseException) -> None:
            failure.append(exc)
            announced.set()

        worker = serve_in_thread(zaps, stop, failed, **options)
        try:
            if not announced.wait(60) or failure:
                raise fail(f"zapflow serve did not start: {failure[0] if failure else 'timeout'}")
            text = "\n".join(lines)
            hooks = dict(re.findall(r"catch hook of (\S+): (\S+)", text))
            app_hooks = dict(re.findall(r"cinnox connection (\S+): (\S+)/<channel>", text))
            expected = _demo_deliveries(catch, hooks, cinnox, app_hooks, sandbox)
            if requests:
                expected += _demo_decide_requests(requests, sheets, started_at)
            rows = _demo_wait_for_runs(expected, started_at)
        finally:
            stop.request()
            worker.join()
        _demo_show(rows, sandbox, slack, sheets)
        out.print(f"Run history: {server.ui_url(url)}/runs  (zapflow runs · zapflow server stop)")
        if keep_serving:
            out.print("serving the example zaps until Ctrl-C")
            serve_until_signalled(zaps, port=port, report=report)
    if len(rows) < expected or any(r.state == "Failed" for r in rows):
        raise typer.Exit(1)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _demo_deliveries(
    catch: dict[str, Any],
    hooks: dict[str, str],
    cinnox: list[Any],
    app_hooks: dict[str, str],
    sandbox: Any,
) -> int:
    """Send the demo's deliveries; returns how many zap runs they should make."""
    import httpx

    from connectors import registry
    from connectors.cinnox.cli import family_url, set_subscription
    from connectors.cinnox.triggers import FAMILY_OF
    from flows import connections

    runs = 0
    with httpx.Client(timeout=10) as client:
        for zap_id, zap in catch.items():
            if zap_id not in hooks:
                continue
            for payload in zap.trigger.samples or registry.trigger("builtin", "catch_hook").samples:
                out.print(f"[bold]▶ POST[/bold] a sample to the catch hook of {zap_id}")
                client.post(hooks[zap_id], json=payload).raise_for_status()
                runs += 1

        async def subscribe(name: str, base: str) -> None:
            connection = await connections.resolve(registry.app("cinnox"), name)
            on = {FAMILY_OF[z.trigger.event] for z in cinnox if z.trigger.connection == name}
            for family in sorted(on):  # each family to its own URL, HOOK_BASE/<family>
                await set_subscription(connection, name, family, family_url(base, family), True)

        for name, base in app_hooks.items():
            asyncio.run(subscribe(name, base))
        for trigger in sorted({z.trigger.event for z in cinnox}):
            zaps_on = [z for z in cinnox if z.trigger.event == trigger]
            times = max(len(z.trigger.samples) for z in zaps_on) or 1
            for _ in range(times):
                names = ", ".join(z.zap for z in zaps_on)
                out.print(f"[bold]▶ CINNOX sandbox[/bold] emits {trigger} (for {names})")
                sandbox.emit(trigger)
                runs += len(zaps_on)
    return runs


def _demo_request_zap(zaps: list[Any]) -> str | None:
    """The example zap that watches requests.xlsx in the sheets folder, if there is one."""
    for zap in zaps:
        spec = zap.trigger
        watched = (spec.event, spec.connection, (spec.options or {}).get("file"))
        if zap.enabled and watched == ("new_or_updated_row", "sheets", "requests.xlsx"):
            return str(zap.zap)
    return None


def _demo_sheet_step(action: str, sheets: Path, data: dict[str, Any]) -> Any:
    """Run ``spreadsheet.<action>`` on the demo's folder of sheets, as a zap's step would."""
    from connectors import ActionContext, registry

    spreadsheet, step = registry.app("spreadsheet"), registry.action(f"spreadsheet.{action}")
    assert spreadsheet.connection is not None
    context = ActionContext(
        zap_id="demo",
        step_id=action,
        run_id="demo",
        event_id="demo",
        connection=spreadsheet.connection.model_validate({"folder": str(sheets)}),
        connection_name="sheets",
    )

    async def run() -> Any:
        return await step.run(step.input_model.model_validate(data), context)

    return asyncio.run(run())


def _demo_seed_requests(sheets: Path) -> None:
    from datetime import datetime

    pickups = [datetime(2026, 11, 27, 10, 0), None]
    for request, pickup in zip(DEMO_REQUESTS, pickups, strict=True):
        row = {**request, "Status": "Pending", "Pick-up": pickup}
        _demo_sheet_step("append_row", sheets, {"file": "requests.xlsx", "row": row})
    out.print(f"[bold]▶ requests.xlsx[/bold]: {len(DEMO_REQUESTS)} requests, Pending")


def _demo_decide_requests(zap_id: str, sheets: Path, since: Any) -> int:
    """Once the zap has polled the request sheet (its first poll only notes the rows there),
    approve one request and reject another; wait for the poll that sees it. Returns the runs
    that makes."""
    polled = _demo_wait_for_poll(zap_id, since)
    for request, status in DEMO_DECISIONS.items():
        data = {"file": "requests.xlsx", "column": "Request", "value": request}
        _demo_sheet_step("update_row", sheets, {**data, "row": {"Status": status}})
        out.print(f"[bold]▶ requests.xlsx[/bold]: {request} set to {status}")
    _demo_wait_for_poll(zap_id, polled)
    return len(DEMO_DECISIONS)


def _demo_wait_for_poll(zap_id: str, after: Any, timeout: float = 60.0) -> Any:
    """Wait until the zap's poller has polled (and stored its events) after ``after``;
    returns when it did."""
    import time

    from flows.intake.inbox import Inbox
    from flows.intake.pollers import PollStore

    async def wait() -> Any:
        inbox = await Inbox.open(None)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                state = await PollStore(inbox).get(zap_id)
                if state is not None and state.last_polled_at and state.last_polled_at > after:
                    return state.last_polled_at
                await asyncio.sleep(0.2)
            return None
        finally:
            await inbox.close()

    polled = asyncio.run(wait())
    if polled is None:
        raise fail(f"zap {zap_id} did not poll its sheet within {timeout:g} s")
    return polled


def _demo_wait_for_runs(expected: int, since: Any, timeout: float = 90.0) -> list[Any]:
    """The runs since ``since`` (newest first), once there are ``expected`` of them and no
    event is waiting or running (or ``timeout`` passed)."""
    import time

    from flows.history import recent_runs
    from flows.intake.inbox import Inbox

    async def progress() -> tuple[list[Any], int]:
        rows = [r for r in await recent_runs(200) if r.started and r.started >= since]
        inbox = await Inbox.open(None)
        try:
            counts = await inbox.counts()
        finally:
            await inbox.close()
        return rows, counts["pending"] + counts["claimed"]

    deadline = time.monotonic() + timeout
    while True:
        rows, busy = asyncio.run(progress())
        settled = not busy and all(r.state != "Running" for r in rows)
        if (len(rows) >= expected and settled) or time.monotonic() > deadline:
            return rows
        time.sleep(0.3)


def _demo_show(rows: list[Any], sandbox: Any, slack: Any, sheets: Path) -> None:
    """The zap runs, what the sandboxes received, and the rows of the sheets."""
    from rich.text import Text

    table = Table(
        Column("zap", no_wrap=True),
        "event",
        Column("state", no_wrap=True),
        "took",
        "failing step",
        title="zap runs",
    )
    for row in reversed(rows):
        took = f"{row.duration.total_seconds():.2f} s" if row.duration else "-"
        table.add_row(row.zap, row.event, row.state, took, row.failing_step or "")
    out.print(table)
    shown = Table("kind", "to", "text", title="what the CINNOX sandbox received")
    for item in reversed(sandbox.sent(limit=50)):
        body, result = item.get("request", {}), item.get("result", {})
        to = result.get("to") or body.get("recipientNumber") or body.get("receiverEID") or ""
        words = body.get("text") or " ".join(m.get("text", "") for m in body.get("messages", []))
        shown.add_row(str(item.get("kind", "")), str(to), str(words))
    out.print(shown)
    posted = Table("to", "text", title="what the Slack sandbox received")
    for where, words in slack.messages():
        posted.add_row(where, Text(words))  # as Slack got it, not as Rich markup
    out.print(posted)
    for path in sorted(sheets.glob("*.xlsx")):
        found = _demo_sheet_step("find_rows", sheets, {"file": path.name, "limit": 50})
        columns = list(found.rows[0]) if found.rows else []
        sheet = Table(*columns, title=f"rows in {path}")
        for values in found.rows:
            sheet.add_row(*("" if v is None else str(v) for v in values.values()))
        out.print(sheet)


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


def _mount_plugins() -> None:
    """Command groups that installed packages add (entry points ``zapflow.cli``); what they
    ask of the engine goes through ``connectors._host``."""
    from importlib.metadata import entry_points

    from connectors._host import install
    from flows.plugin_host import EngineHost

    install(EngineHost())

    for ep in entry_points(group="zapflow.cli"):
        try:
            app.add_typer(ep.load(), name=ep.name)
        except Exception as exc:  # one broken plugin must not take the whole CLI down
            err.print(f"warning: command group {ep.name!r} ({ep.value}) failed to load: {exc}")


_mount_plugins()


def main() -> None:
    app()
