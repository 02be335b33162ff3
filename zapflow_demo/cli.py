"""The ``zapflow demo`` command: the example zaps against the CINNOX and Slack sandboxes."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.table import Column, Table

from flows.cli._common import (
    ZapsOption,
    err,
    fail,
    out,
    prefect_api,
)

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
    import threading
    from datetime import UTC, datetime

    from flows import server
    from flows.intake.folder import app_hook_base, zap_hook_url
    from flows.intake.hooks import Hooks
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
    served: list[Hooks] = []
    announced = threading.Event()

    def report(text: str) -> None:
        out.print(text, markup=False)

    def on_hooks(table: Hooks) -> None:  # the receiver serves them now
        served.append(table)
        announced.set()

    with prefect_api() as url, _demo_peers() as (sandbox, slack, sheets):
        out.print(f"run history: {server.ui_url(url)}")
        if requests:
            _demo_seed_requests(sheets)
        started_at = datetime.now(UTC)
        stop = StopHandle()
        options: dict[str, Any] = {
            "port": port,
            "live_idle": 1.0,
            "report": report,
            "on_hooks": on_hooks,
        }
        failure: list[BaseException] = []

        def failed(exc: BaseException) -> None:
            failure.append(exc)
            announced.set()

        worker = serve_in_thread(zaps, stop, failed, **options)
        try:
            if not announced.wait(60) or failure:
                raise fail(f"zapflow serve did not start: {failure[0] if failure else 'timeout'}")
            public, table = f"http://127.0.0.1:{port}", served[-1]
            hooks = {z: zap_hook_url(public, z, h.token) for z, h in table.zaps.items()}
            app_hooks = {
                name: app_hook_base(public, app, name, h.token)
                for (app, name), h in table.apps.items()
                if app == "cinnox"
            }
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
