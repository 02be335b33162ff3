"""Commands about connections: connect, connections (list, show, rename, rekey, delete)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from flows.cli._common import (
    ZapsOption,
    app,
    err,
    fail,
    out,
    prefect_api,
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
        moved = asyncio.run(connections.migrate_legacy(apps))
        rows = asyncio.run(connections.block_connections(apps))
    if moved:
        err.print(f"moved to their app's block type: {', '.join(moved)}", markup=False)
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
