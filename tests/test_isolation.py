"""One bad event or template is that zap run's problem alone: under `zapflow serve`, while a
poison event (one that can never become a run) and runaway templates are in flight, a plain
zap's events still act within a second."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from serve_process import Serve, ledger

pytestmark = pytest.mark.usefixtures("prefect_api")

PLAIN = """\
zap: plain
trigger: {{app: builtin, event: catch_hook}}
steps:
  - id: notify
    action: http.request
    input: {{method: POST, url: "{sink}/{{{{ trigger.n }}}}", json: {{}}}}
"""
RUNAWAY = """\
zap: runaway
trigger: {app: builtin, event: catch_hook}
steps:
  - id: spin
    action: builtin.format_text
    input:
      transform: uppercase
      value: "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
"""


class Sink:
    """When each plain event's request arrived (monotonic seconds)."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                sink.arrived[self.path.strip("/")] = time.monotonic()
                self.rfile.read(int(self.headers.get("content-length") or 0))
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = {"a": value}
    return value


def put_poison(home: Any) -> str:
    """An event for the plain zap nested 300 deep, as an older zapflow (before the receiver's
    nesting limit) accepted it: it can never be turned into a run."""
    from flows.events import Event
    from flows.intake import event_queue
    from flows.intake import inbox as inbox_module

    async def put() -> str:
        inbox = await inbox_module.Inbox.open(f"sqlite+aiosqlite:///{home / 'inbox.db'}")
        event = Event(
            id=uuid.uuid4().hex,
            app="builtin",
            trigger="catch_hook",
            payload={"n": "poison", **nested(300)},
            zap="plain",
        )
        try:
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(event_queue, "check_depth", lambda payload: None)
                assert await inbox.put(event)
        finally:
            await inbox.close()
        return event.id

    return asyncio.run(put())


def peak_memory_mb(pid: int) -> float:
    """The most memory the process ever held (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[tuple[int, str]]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[1]) == pid:
                cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                found.append((int(stat.parent.name), cmdline))
        except (OSError, ValueError, IndexError):
            continue
    return found


def test_a_poison_event_and_runaway_templates_hold_no_plain_zap_back(
    tmp_path, prefect_api, figures
):
    sink = Sink()
    folder = tmp_path / "zaps"
    folder.mkdir()
    (folder / "plain.yaml").write_text(PLAIN.format(sink=sink.url))
    (folder / "runaway.yaml").write_text(RUNAWAY)
    home = tmp_path / "home"
    serve = Serve(folder, home, {"PREFECT_API_URL": prefect_api})
    try:
        plain = serve.wait_for(r"catch hook of plain: (\S+)").group(1)
        runaway = serve.wait_for(r"catch hook of runaway: (\S+)").group(1)
        with httpx.Client(timeout=10) as client:
            assert client.post(plain, json={"n": "warm"}).status_code == 200
            deadline = time.monotonic() + 30
            while "warm" not in sink.arrived:  # the plain zap's live flow run is up
                assert time.monotonic() < deadline, serve.output()
                time.sleep(0.05)

            poison = put_poison(home)
            for i in range(6):
                assert client.post(runaway, json={"i": i}).status_code == 200
            time.sleep(0.3)  # the poison has been claimed and the templates are rendering
            took = {}
            for n in range(8):
                sent = time.monotonic()
                assert client.post(plain, json={"n": str(n)}).status_code == 200
                while str(n) not in sink.arrived and time.monotonic() - sent < 10:
                    time.sleep(0.005)
                took[n] = sink.arrived.get(str(n), float("inf")) - sent
                time.sleep(0.25)
        assert max(took.values()) < 1.0, took

        deadline = time.monotonic() + 30
        while len(spun := [r for r in ledger(home, "runaway") if r.state == "failed"]) < 6:
            assert time.monotonic() < deadline, ledger(home, "runaway")
            time.sleep(0.2)
        messages = [r.message for r in spun]
        over = ("the template did more than 1,000,000 loop", "the template ran longer than 0.5 s")
        assert all(any(limit in m for limit in over) for m in messages), messages
        deadline = time.monotonic() + 30
        while not (rows := [r for r in ledger(home, "plain") if r.event_id == poison])[0:1] or (
            rows[0].state != "failed"
        ):
            assert time.monotonic() < deadline, rows
            time.sleep(0.2)
        assert rows[0].message.startswith("could not be run (3 tries): ")
        renderers = [pid for pid, cmd in children(serve.proc.pid) if "flows.rendering" in cmd]
        assert renderers, children(serve.proc.pid)
        section = "a poison event and 6 runaway templates in flight (zapflow serve)"
        figures.record(section, "plain zap's events, slowest (s)", round(max(took.values()), 3))
        figures.record(section, "runaway templates failed in budget", len(spun))
        figures.record(section, "poison event: tries, then failed", 3)
        figures.record(section, "serve's memory peak (MB)", round(peak_memory_mb(serve.proc.pid)))
        figures.record(
            section,
            "render processes' memory peak (MB)",
            round(max(peak_memory_mb(pid) for pid in renderers)),
        )
    finally:
        code = serve.stop()
    assert code == 0, serve.output()
