"""The ``zapflow`` command line, one module per command group: zaps (validate, schema, apps,
docs, test, run), runs (history, replay, parked and held runs), serve, connections and
prefect_server; installed packages add commands (entry points ``zapflow.commands``: the demo)
and groups (``zapflow.cli``: the apps')."""

from __future__ import annotations

# The command groups register on the app as they are imported, in the order `zapflow --help`
# lists them.
# isort: off
from flows.cli import zaps, runs, serve, connections, prefect_server  # noqa: F401

# isort: on
from flows.cli._common import app, err

__all__ = ["app", "main"]


def _mount_plugins() -> None:
    """Command groups that installed packages add (entry points ``zapflow.cli``); what they
    ask of the engine goes through ``connectors._host``."""
    from importlib.metadata import entry_points

    from connectors._host import install
    from flows.plugin_host import EngineHost

    install(EngineHost())

    for ep in entry_points(group="zapflow.commands"):
        try:
            app.command(ep.name)(ep.load())
        except Exception as exc:  # one broken plugin must not take the whole CLI down
            err.print(f"warning: command {ep.name!r} ({ep.value}) failed to load: {exc}")
    for ep in entry_points(group="zapflow.cli"):
        try:
            app.add_typer(ep.load(), name=ep.name)
        except Exception as exc:  # one broken plugin must not take the whole CLI down
            err.print(f"warning: command group {ep.name!r} ({ep.value}) failed to load: {exc}")


_mount_plugins()


def main() -> None:
    app()
