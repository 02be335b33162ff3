"""The whole several-machines topology as processes on loopback, set up as the README's
"Running on several machines" says: Prefect's API twice on PostgreSQL with Redis messaging plus its
background services in a process of their own, two zapflow receivers and two workers sharing a
PostgreSQL inbox. 2,000 events go in across both receivers; one worker and one receiver are
SIGKILLed mid-stream — the worker killed is the one holding the poller. Every acknowledged event
runs once (a repeat only for the step in flight at the kill, with its idempotency key), the
poller and the schedule go on, on the other worker, each item and moment taken once, and
Prefect's history holds a completed task run for every event's step, whichever API replica
recorded it.

Needs the PostgreSQL and Redis this machine runs (``ZAPFLOW_TEST_POSTGRES_URL``,
``ZAPFLOW_TEST_REDIS_URL``); skipped, saying why, without them.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from serve_process import Serve
from test_crash import ZAP, Sink
from test_roles import completed_runs
from topology import PrefectAtScale, fresh_databases  # bench's (conftest)

from flows.intake.db import leases
from flows.intake.inbox import Inbox
from flows.intake.pollers import LEASE_SECONDS, lease_name

PG_URL = os.environ.get("ZAPFLOW_TEST_POSTGRES_URL")
REDIS_URL = os.environ.get("ZAPFLOW_TEST_REDIS_URL")
EVENTS = 2000

POLL_ZAP = """\
zap: new-orders
trigger:
  app: http
  event: new_items
  options: {{url: "{items}/items", items_path: items, id_field: id, interval: 1s}}
steps:
  - id: forward
    action: http.request
    input:
      method: POST
      url: "{sink}/orders"
      json: {{n: "{{{{ trigger.id }}}}"}}
      send_idempotency_key: true
"""

SCHEDULE_ZAP = """\
zap: every-minute
trigger:
  app: builtin
  event: schedule
  options: {{cron: "* * * * *"}}
steps:
  - id: tick
    action: http.request
    input:
      method: POST
      url: "{sink}/ticks"
      json: {{n: "{{{{ trigger.scheduled_at }}}}"}}
      send_idempotency_key: true
"""


class Orders:
    """A service that cannot call back: a new order every half second on ``GET /items``."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        orders = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps({"items": [{"id": f"order-{k}"} for k in orders.listed()]})
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def listed(self) -> range:
        return range(int((time.monotonic() - self.start) / 0.5))


def _orders(sink: Sink) -> set[int]:
    """The orders the poller's zap delivered."""
    return {int(n.removeprefix("order-")) for n in list(sink.keys) if n.startswith("order-")}


def _holder(url: str, zap: str) -> str | None:
    """Which serve process holds ``zap``'s poller or schedule (``host:pid:start``)."""

    async def read() -> str | None:
        async with await Inbox.open(url) as inbox, inbox.engine.connect() as conn:
            query = sa.select(leases.c.holder).where(leases.c.name == lease_name(zap))
            return (await conn.execute(query)).scalar()

    return asyncio.run(read())


@pytest.fixture
def databases() -> Iterator[list[str]]:
    """Two databases of their own: zapflow's inbox and Prefect's."""
    if not PG_URL or not REDIS_URL:
        pytest.skip(
            "the several-machines topology needs PostgreSQL and Redis: set "
            "ZAPFLOW_TEST_POSTGRES_URL and ZAPFLOW_TEST_REDIS_URL (.ci/run sets both)"
        )
    with fresh_databases(PG_URL, "zapflow_topo", "prefect_topo") as urls:
        yield urls


def _send(urls: list[str], first: int, last: int, acked: set[int], lock: threading.Lock) -> None:
    """Deliver events first..last-1, alternating receivers; a refused or failed delivery goes to
    the other receiver, with the same webhook-id, until one acknowledges it."""
    with httpx.Client(timeout=5) as client:
        for n in range(first, last):
            turn = n
            while True:
                url = urls[turn % len(urls)]
                try:
                    reply = client.post(url, json={"n": n}, headers={"webhook-id": f"d-{n}"})
                    if reply.status_code == 200:
                        with lock:
                            acked.add(n)
                        break
                except httpx.HTTPError:
                    pass
                turn += 1
                time.sleep(0.05)


def _completed_task_runs(api: str) -> int:
    body = {"task_runs": {"state": {"type": {"any_": ["COMPLETED"]}}, "name": {"like_": "notify"}}}
    reply = httpx.post(f"{api}/task_runs/count", json=body, timeout=30)
    reply.raise_for_status()
    return int(reply.json())


def test_receivers_and_workers_on_prefect_at_scale_run_every_event_once(
    tmp_path: Path, databases: list[str]
) -> None:
    inbox_url, prefect_db = databases
    assert REDIS_URL is not None
    prefect = PrefectAtScale(prefect_db, REDIS_URL, tmp_path / "prefect")
    sink = Sink()
    folder = tmp_path / "zaps"
    folder.mkdir()
    orders = Orders()
    (folder / "crash.yaml").write_text(ZAP.format(sink=sink.url))
    (folder / "orders.yaml").write_text(POLL_ZAP.format(items=orders.url, sink=sink.url))
    (folder / "ticks.yaml").write_text(SCHEDULE_ZAP.format(sink=sink.url))
    inbox = ["--inbox", inbox_url]
    processes: list[Serve] = []
    try:
        prefect.start()
        receivers = [
            Serve(folder, tmp_path / f"rx{i}", {}, extra=["--role", "receiver", *inbox])
            for i in (1, 2)
        ]
        workers = [  # each worker on its own API replica, as behind a load balancer
            Serve(
                folder,
                tmp_path / f"w{i}",
                {"PREFECT_API_URL": api},
                extra=["--role", "worker", *inbox],
            )
            for i, api in enumerate(prefect.apis)
        ]
        processes = [*receivers, *workers]
        hooks = [r.wait_for(r"catch hook of crash-notify: (\S+)").group(1) for r in receivers]
        for worker in workers:
            worker.wait_for(r"^worker \(inbox postgresql", timeout=120)

        acked: set[int] = set()
        lock = threading.Lock()
        senders = [
            threading.Thread(target=_send, args=(hooks, k, EVENTS, acked, lock), daemon=True)
            for k in (0,)
        ]
        for sender in senders:
            sender.start()
        while len(sink.keys) < EVENTS // 4:  # events mostly: a few orders and ticks
            time.sleep(0.05)
        holder = _holder(inbox_url, "new-orders")
        assert holder, "no worker took the poller"
        [polling] = [w for w in workers if f":{w.proc.pid}:" in holder]
        polled = _orders(sink)
        deadline = time.monotonic() + 30
        while not polled and time.monotonic() < deadline:  # its first poll only notes the list
            time.sleep(0.2)
            polled = _orders(sink)
        assert polled, "the poller ran nothing before the kill"
        polling.kill()  # the worker holding the poller, mid-stream
        killed_at = time.time()
        while len(acked) < EVENTS // 2:
            time.sleep(0.05)
        receivers[0].kill()  # its senders' next deliveries go to the other receiver
        for sender in senders:
            sender.join(timeout=300)
        assert len(acked) == EVENTS, "the surviving receiver did not take every event"
        deadline = time.monotonic() + 300
        while len(events := {n for n in list(sink.keys) if n.isdigit()}) < EVENTS:
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert events == {str(n) for n in range(EVENTS)}, "an acknowledged event was lost"
        for n, keys in sink.keys.items():  # a repeat is the step in flight at the kill
            assert len(set(keys)) == 1, (n, keys)

        # The poller and the schedule go on on the survivor: once the lease has run out, the
        # orders listed meanwhile run (each once: the check above), and a moment after the kill
        # fires (the latest missed one at the takeover, or the next).
        survivor = next(w for w in workers if w is not polling)
        expected = set(range(min(polled), int((time.monotonic() - orders.start) / 0.5)))
        deadline = time.monotonic() + 2 * LEASE_SECONDS + 70
        while time.monotonic() < deadline:
            ticks = {datetime.fromisoformat(n) for n in sink.keys if "T" in n}
            if any(t.timestamp() > killed_at for t in ticks) and _orders(sink) >= expected:
                break
            time.sleep(0.5)
        assert any(t.timestamp() > killed_at for t in ticks), (
            "the schedule stopped",
            sorted(ticks),
            survivor.output()[-3000:],
        )
        assert not expected - _orders(sink), sorted(expected - _orders(sink))
        assert f":{survivor.proc.pid}:" in (_holder(inbox_url, "new-orders") or "")
        assert all(t.second == 0 and t.tzinfo == UTC for t in ticks)
        ledger = completed_runs(inbox_url, "crash-notify")
        assert len(ledger) == EVENTS
        # Prefect's history, through either replica: a completed task run per event's step.
        deadline = time.monotonic() + 120
        while _completed_task_runs(prefect.apis[1]) < EVENTS and time.monotonic() < deadline:
            time.sleep(1)
        assert _completed_task_runs(prefect.apis[0]) >= EVENTS
    finally:
        for process in processes:
            if process.proc.poll() is None:
                process.stop()
        prefect.stop()
