"""Commands about zaps and apps: validate, schema, apps, docs, test, run."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from connectors._errors import ZapError
from flows.cli._common import (
    DEFAULT_ZAPS,
    ZapsOption,
    app,
    err,
    fail,
    out,
    prefect_api,
)
from flows.errors import ZapValidationError

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
def sync(
    folder: Path = typer.Argument(DEFAULT_ZAPS, help="The zap folder, in a git checkout"),
    upstream: str = typer.Option(
        None, "--upstream", help="What to follow (default: the branch's upstream), e.g. origin/main"
    ),
    every: str = typer.Option(
        None, "--every", help="Keep syncing at this interval (30s, 5m …) until stopped"
    ),
) -> None:
    """Bring a zap folder's git checkout up to its remote: fetch, validate the new revision's
    zaps, fast-forward. A revision with a problem is not taken (the current one keeps running);
    a serve on the folder picks the changes up by itself."""
    import signal
    import threading
    from datetime import timedelta

    from connectors._units import parse_duration
    from flows.sync import SyncError
    from flows.sync import sync as sync_folder

    interval = None
    if every is not None:
        try:
            parsed = parse_duration(every)
        except ValueError as exc:
            raise fail(f"--every: {exc}") from None
        if not isinstance(parsed, timedelta) or parsed.total_seconds() < 1:
            raise fail(f"--every: {every!r} is not a duration of at least 1s (30s, 5m …)")
        interval = parsed.total_seconds()
    stop = threading.Event()
    if interval is not None:  # a stop (systemd's SIGTERM, Ctrl-C) waits for the round in hand:
        for sig in (signal.SIGTERM, signal.SIGINT):  # never a merge cut halfway
            signal.signal(sig, lambda *_: stop.set())
    refused: str | None = None  # the revision last refused, said once
    failing: str | None = None  # the last failure, said once until it changes or ends
    while True:
        try:
            done = sync_folder(folder, upstream)
        except SyncError as exc:
            if interval is None:
                raise fail(str(exc)) from None
            if str(exc) != failing:  # the remote away: try again next time
                err.print(f"sync: {exc}; trying again every {every}", markup=False)
            failing = str(exc)
        else:
            if failing is not None:
                err.print("sync: works again", markup=False)
                failing = None
            if done.problems and done.target != refused:
                err.print(
                    f"[red]not taken[/red]: {done.target[:12]} has {len(done.problems)} "
                    f"problem(s); {folder} stays at {done.before[:12]}"
                )
                for problem in done.problems:
                    err.print(problem, markup=False)
                refused = done.target
            elif done.moved:
                files = ", ".join(done.changed) or "no zap files"
                out.print(
                    f"{folder}: {done.before[:12]} → {done.after[:12]} ({files})", markup=False
                )
            elif interval is None:
                out.print(f"{folder}: up to date at {done.before[:12]}", markup=False)
            if done.problems and interval is None:
                raise typer.Exit(1)
        sys.stdout.flush()  # a unit's journal shows each round as it happens
        if interval is None or stop.wait(interval):
            return


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
    from flows.events import Event

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
        from flows.plan import plan_of

        samples = plan_of(zap).samples
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
    from flows.plan import plan_of
    from flows.runtime import ZapRun

    try:
        model = resolve_zap(zap, zaps)
        trigger_event = read_event(model, event, sample, wire)
        _note_retries(model)
        run = ZapRun(plan_of(model), trigger_event, dry_run=dry_run, testing=True)
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
