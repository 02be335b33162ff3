from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from connectors import ActionContext, App, PermanentError, RetryableError, registry

# bench/topology.py launches the several-machines topology for bench_topology.py and the tests.
sys.path.append(str(Path(__file__).resolve().parents[1] / "bench"))

HERE = Path(__file__).parent
EXAMPLE_ZAPS = HERE.parent / "zaps"


@pytest.fixture
def write_zap(tmp_path: Path):
    """Write a zap file and return its path."""

    def write(text: str, name: str = "zap.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture(scope="session", autouse=True)
def zapflow_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """zapflow's state folder (inbox, run ledger) for the session: never the checkout's."""
    home = tmp_path_factory.mktemp("zapflow-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ZAPFLOW_HOME", str(home))
        yield home


class Figures:
    """What the reliability tests measured, printed at the end of the run (CI shows them, and
    the README quotes them): ``record(section, what, value)``."""

    def __init__(self) -> None:
        self.sections: dict[str, dict[str, Any]] = {}

    def record(self, section: str, what: str, value: Any) -> None:
        self.sections.setdefault(section, {})[what] = value

    def count(self, section: str, what: str, by: int = 1) -> None:
        figures = self.sections.setdefault(section, {})
        figures[what] = figures.get(what, 0) + by


FIGURES = Figures()


@pytest.fixture(scope="session")
def figures() -> Figures:
    return FIGURES


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES.sections:
        return
    terminalreporter.section("zapflow reliability figures")
    for section, figures in FIGURES.sections.items():
        terminalreporter.write_line(f"{section}:")
        for what, value in figures.items():
            terminalreporter.write_line(f"  {what}: {value}")


@pytest.fixture(scope="session")
def prefect_api() -> Any:
    """One throwaway Prefect server (SQLite) for the whole test session."""
    from prefect.logging.configuration import setup_logging
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    # Bind Prefect's console logging to the session's stderr now: CliRunner swaps sys.stderr
    # for each invocation and closes it afterwards.
    setup_logging()
    with prefect_test_harness(server_startup_timeout=180):
        yield PREFECT_API_URL.value()


# An app whose action fails on purpose, the way a flaky or refusing app does, so the engine's
# retry policy can be observed in run history. Registered for the test session only.
flaky = App("flaky", title="Flaky app (tests)")
ATTEMPTS: Counter[str] = Counter()


class FlakyInput(BaseModel):
    fail_times: int = 0
    crash_times: int = 0
    """Fail this many times with an unexpected error (a bug, not a typed connector error)."""
    permanent: bool = False
    value: Any = None
    seconds: float = 0.0
    """How long the app takes to answer."""


class FlakyOutput(BaseModel):
    value: Any
    attempts: int


@flaky.action("call", title="Call a flaky app")
async def flaky_call(input: FlakyInput, ctx: ActionContext) -> FlakyOutput:
    """Fails `fail_times` times with a transient error, or for good when `permanent`."""
    ATTEMPTS[ctx.idempotency_key] += 1
    attempt = ATTEMPTS[ctx.idempotency_key]
    await asyncio.sleep(input.seconds)
    if input.permanent:
        raise PermanentError("the app refused the request: invalid recipient")
    if attempt <= input.crash_times:
        raise RuntimeError(f"attempt {attempt}: something unexpected broke")
    if attempt <= input.fail_times:
        raise RetryableError(f"attempt {attempt}: the app answered 503")
    return FlakyOutput(value=input.value, attempts=attempt)


registry.register(flaky)
