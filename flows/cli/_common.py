"""What every command group of ``zapflow`` shares: the Typer app, consoles, options, errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console

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


@contextmanager
def prefect_api() -> Iterator[str]:
    """Run history: the configured Prefect server, or zapflow's own (started if needed)."""
    from flows import server

    try:
        with server.api() as url:
            yield url
    except server.ServerError as exc:
        raise fail(str(exc)) from None
