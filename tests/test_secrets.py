"""No secret reaches a store: after every example zap ran (`zapflow demo`: real deliveries,
real Prefect runs, the CINNOX and Slack sandboxes as peers), the connections' secrets — in any
form a peer or a log line might carry them: as they are, lower- or upper-cased, URL-encoded,
base64 (standard, URL-safe, unpadded) or hex — are nowhere in Prefect's run history (flow runs
and their parameters, states and results, task runs, logs, artifacts, variables), in the
demo's output, in the inbox and run ledger, or in any file of the state folder."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import secrets as secrets_module
import sqlite3
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from flows.cli import app
from zapflow_demo import cli as cli_demo

pytestmark = pytest.mark.usefixtures("prefect_api")


def forms(secret: str) -> dict[str, str]:
    raw = secret.encode()
    encoded = {
        "as is": secret,
        "lower-cased": secret.lower(),
        "upper-cased": secret.upper(),
        "URL-encoded": urllib.parse.quote(secret, safe=""),
        "base64": base64.b64encode(raw).decode(),
        "URL-safe base64": base64.urlsafe_b64encode(raw).decode(),
        "hex": binascii.hexlify(raw).decode(),
    }
    encoded["unpadded base64"] = encoded["base64"].rstrip("=")
    return {how: text for how, text in encoded.items() if len(text) >= 12}


def prefect_history() -> dict[str, str]:
    """Everything the Prefect server keeps of the runs, as text, by kind."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter
    from prefect.client.schemas.sorting import LogSort

    async def read() -> dict[str, str]:
        async with get_client() as client:
            flow_runs = await client.read_flow_runs(limit=200)
            task_runs = await client.read_task_runs(limit=200)
            logs = await client.read_logs(LogFilter(), limit=200, sort=LogSort.TIMESTAMP_ASC)
            states = [
                s.model_dump(mode="json")
                for run in flow_runs
                for s in await client.read_flow_run_states(run.id)
            ]
            artifacts = await client.read_artifacts(limit=200)
            variables = await client.read_variables(limit=200)

            def text(items: list[Any]) -> str:
                return json.dumps(
                    [i.model_dump(mode="json") if hasattr(i, "model_dump") else i for i in items],
                    default=str,
                )

            more_logs: list[Any] = []
            offset = 200
            while len(batch := await client.read_logs(LogFilter(), limit=200, offset=offset)):
                more_logs += batch
                offset += 200
            return {
                "flow runs": text(flow_runs),
                "flow run states": text(states),
                "task runs": text(task_runs),
                "logs": text(logs + more_logs),
                "artifacts": text(artifacts),
                "variables": text(variables),
            }

    return asyncio.run(read())


def database_text(path: Path) -> str:
    """Every value of every table of a SQLite database, as text."""
    rows: list[str] = []
    with contextlib.closing(sqlite3.connect(path)) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            rows += [repr(row) for row in db.execute(f'SELECT * FROM "{table}"')]
    return "\n".join(rows)


def state_folder(home: Path) -> Iterator[tuple[str, str]]:
    for path in sorted(p for p in home.rglob("*") if p.is_file()):
        if path.suffix == ".db":
            yield str(path), database_text(path)
        elif path.suffix == ".xlsx":
            from openpyxl import load_workbook

            book = load_workbook(path)
            cells = [
                repr(r) for sheet in book.worksheets for r in sheet.iter_rows(values_only=True)
            ]
            yield str(path), "\n".join(cells)
        elif not path.name.endswith(("-wal", "-shm")):
            yield str(path), path.read_bytes().decode("utf-8", "replace")


ECHO_ZAP = """\
zap: echo-secret
trigger: {{app: builtin, event: catch_hook}}
steps:
  - id: call
    action: http.request
    connection: echo
    retries: 1
    retry_delay: 0.1s
    input: {{method: POST, url: "{url}/echo", json: {{}}}}
"""


class Echo:
    """An HTTP peer that echoes the Authorization it got: lower- and upper-cased, URL-encoded,
    base64 and hex, in its body and a header — in a 503 the first time, then in a 200."""

    def __init__(self) -> None:
        self.calls = 0
        echo = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                echo.calls += 1
                token = self.headers.get("authorization", "").removeprefix("Bearer ")
                raw = token.encode()
                body = json.dumps(
                    {
                        "seen": token,
                        "lower": token.lower(),
                        "upper": token.upper(),
                        "quoted": urllib.parse.quote(token, safe=""),
                        "b64": base64.b64encode(raw).decode(),
                        "urlsafe": base64.urlsafe_b64encode(raw).decode().rstrip("="),
                        "hex": raw.hex(),
                        "list": [token, {"deep": token.lower()}],
                    }
                ).encode()
                self.send_response(503 if echo.calls == 1 else 200)
                self.send_header("content-type", "application/json")
                self.send_header("x-echo", base64.b64encode(raw).decode())
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Echo:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()


def test_no_secret_in_any_store_after_every_example_zap_ran(
    zapflow_home, tmp_path, monkeypatch, figures
):
    from conftest import EXAMPLE_ZAPS

    secrets: dict[str, str] = {}
    demo_peers = cli_demo._demo_peers

    @contextlib.contextmanager
    def peers_noting_secrets() -> Iterator[Any]:
        with demo_peers() as (control, slack, sheets):
            secrets["CINNOX app token"] = control.accounts()[0]["appToken"]
            secrets["Slack bot token"] = slack.bot_token
            secrets["Slack webhook secret"] = slack.webhook_url.rsplit("/services/", 1)[1]
            yield control, slack, sheets

    monkeypatch.setattr(cli_demo, "_demo_peers", peers_noting_secrets)
    result = CliRunner().invoke(app, ["demo", "--zaps", str(EXAMPLE_ZAPS)])
    assert result.exit_code == 0, result.output
    assert "Failed" not in result.output
    assert len(secrets) == 3 and all(len(s) >= 16 for s in secrets.values())

    # A peer that echoes an HTTP connection's bearer token back in every form it can, first in
    # an error (retried), then in its answer: the step's log, state and output get it masked.
    canary = "zf-canary-" + secrets_module.token_urlsafe(24)
    secrets["HTTP bearer token"] = canary
    with Echo() as echo:
        zap = tmp_path / "echo.yaml"
        zap.write_text(ECHO_ZAP.format(url=echo.url))
        monkeypatch.setenv("ZAPFLOW_HTTP_ECHO_AUTH", "bearer")
        monkeypatch.setenv("ZAPFLOW_HTTP_ECHO_TOKEN", canary)
        echoed = CliRunner().invoke(app, ["run", str(zap), "--sample", "1"])
    assert echoed.exit_code == 0, echoed.output
    assert echo.calls == 2, "the peer failed once, then echoed"

    stores = {
        "the demo's output": result.output,
        "zapflow run's output": echoed.output,
        **prefect_history(),
    }
    assert "cinnox.send_sms" in stores["task runs"] or "sms" in stores["task runs"]
    assert len(stores["logs"]) > 1000  # the steps' logs were read
    stores.update(state_folder(zapflow_home))
    assert any(name.endswith("inbox.db") for name in stores)

    found = [
        f"{name} ({how}) in {where}"
        for name, secret in secrets.items()
        for how, form in forms(secret).items()
        for where, text in stores.items()
        if form in text
    ]
    section = "secrets (canaries) after every example zap ran"
    figures.record(
        section, "secrets x forms looked for", sum(len(forms(s)) for s in secrets.values())
    )
    figures.record(section, "stores searched", len(stores))
    figures.record(section, "found", len(found))
    print(
        f"secrets looked for: {len(secrets)} in {sum(len(forms(s)) for s in secrets.values())}"
        f" forms, across {len(stores)} stores; found: {len(found)}"
    )
    assert found == []
