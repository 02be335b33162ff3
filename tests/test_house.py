"""The house's rules, checked in CI as in a reviewer's head: ruff's lint and format, mypy, the
import layering of pyproject.toml's `[tool.importlinter]` (apps use the connector contract, not
the engine nor each other; the engine reaches apps through the registry), and the lock file
the README's commands install from."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
BIN = Path(sys.executable).parent


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / command[0]), *command[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize(
    "command",
    [
        ("ruff", "check", "."),
        ("ruff", "format", "--check", "."),
        ("mypy",),
        ("lint-imports",),
    ],
    ids=["ruff-check", "ruff-format", "mypy", "import-layers"],
)
def test_the_code_passes_its_checkers(command: tuple[str, ...]) -> None:
    done = _run(*command)
    assert done.returncode == 0, f"`{' '.join(command)}` failed:\n{done.stdout}\n{done.stderr}"


PREFECT_INTERNALS = (
    "prefect.flow_engine",
    "prefect.utilities.engine",
    "prefect.types._datetime",
    "prefect.results",
    "prefect.utilities.math",
    "prefect.client.schemas.actions",
)
"""What flows/prefect_bridge.py wraps (its docstring says why each is needed)."""


def test_prefect_below_its_public_surface_is_used_only_in_the_bridge() -> None:
    import ast

    found = []
    for path in sorted([*ROOT.glob("flows/**/*.py"), *ROOT.glob("connectors/**/*.py")]):
        if path == ROOT / "flows" / "prefect_bridge.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            found += [
                f"{path.relative_to(ROOT)}:{node.lineno}: {name}"
                for name in names
                if any(name == m or name.startswith(m + ".") for m in PREFECT_INTERNALS)
            ]
    assert not found, "use flows/prefect_bridge.py (and list the internal there):\n" + "\n".join(
        found
    )
    bridge = (ROOT / "flows" / "prefect_bridge.py").read_text(encoding="utf-8")
    assert all(
        f"``{m}" in bridge for m in PREFECT_INTERNALS if m != "prefect.client.schemas.actions"
    )


def _lock() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"requirements.lock: {line!r} is not NAME==VERSION"
            pins[_normal(name)] = version.split(";")[0].strip()
    return pins


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_what_is_installed_is_what_the_lock_says() -> None:
    """The README's commands install with `-c requirements.lock`: every package installed here
    is at its locked version, and every dependency of pyproject.toml is locked."""
    pins = _lock()
    installed = {_normal(d.metadata["Name"]): d.version for d in metadata.distributions()}
    drift = {
        name: (installed[name], pinned)
        for name, pinned in pins.items()
        if name in installed and installed[name] != pinned
    }
    assert not drift, f"installed ≠ locked (installed, locked): {drift}"
    wanted = metadata.requires("zapflow") or []
    missing = sorted(
        name
        for name in (_normal(re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0]) for r in wanted)
        if name not in pins
    )
    assert not missing, f"dependencies not in requirements.lock: {missing}"
    # Prefect is pinned exactly: flows/ reaches below its public surface (see pyproject.toml).
    prefect = next(r for r in wanted if _normal(r).startswith("prefect"))
    assert "==" in prefect and prefect.split("==")[1].strip() == pins["prefect"]
    from flows.server import TESTED_PREFECT  # what serve checks the server and client against

    assert pins["prefect"] == TESTED_PREFECT
