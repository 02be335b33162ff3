"""The ``zapflow`` command line."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(
    name="zapflow",
    help="Self-hosted zaps: YAML automations compiled into Prefect flows.",
    no_args_is_help=True,
    add_completion=False,
)
out = Console()
err = Console(stderr=True)

DEFAULT_ZAPS = Path("zaps")


@app.command()
def validate(
    paths: list[Path] = typer.Argument(None, help="Zap files or folders (default: ./zaps)"),
) -> None:
    """Check zap files: YAML, schema, apps, inputs, templates. Lists every problem found."""
    from flows.loader import find_zap_files, load_all

    targets = paths or [DEFAULT_ZAPS]
    missing = [p for p in targets if not p.exists()]
    for path in missing:
        err.print(f"{path}: no such file or folder")
    loaded, problems = load_all([p for p in targets if p.exists()])
    for problem in problems:
        err.print(str(problem), markup=False, highlight=False)
    files = len(find_zap_files([p for p in targets if p.exists()]))
    if problems or missing:
        err.print(f"[red]{len(problems)} problem(s)[/red] in {files} file(s)")
        raise typer.Exit(1)
    if not files:
        err.print("no zap files found (*.yaml, *.yml)")
        raise typer.Exit(1)
    out.print(f"[green]ok[/green]: {len(loaded)} zap(s) valid")


def main() -> None:
    app()
