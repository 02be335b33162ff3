"""The whole several-machines topology as processes on loopback, set up as the README's
"Several machines" says: Prefect's API twice on PostgreSQL with Redis messaging plus its
background services in a process of their own, two zapflow receivers and two workers sharing a
PostgreSQL inbox. 2,000 events go in across both receivers; one worker and one receiver are
SIGKILLed mid-stream. Every acknowledged event runs once (a repeat only for the step in flight
at the kill, with its idempotency key), the poller keeps running on one worker, and Prefect's
history holds a completed task run for every event's step, whichever API replica recorded it.

Needs the PostgreSQL and Redis this machine runs (``ZAPFLOW_TEST_POSTGRES_URL``,
``ZAPFLOW_TEST_REDIS_URL``); skipped, saying why, without them.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serve_process import Serve
from test_crash import ZAP, Sink
from test_roles import completed_runs
from topology import PrefectAtScale, fresh_databases  # bench's (conftest)

PG_URL = os.environ.get("ZAPFLOW_TEST_POSTGRES_URL")
REDIS_URL = os.environ.get("ZAPFLOW_TEST_REDIS_URL")
EVENTS = 2000


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
    (folder / "crash.yaml").write_text(ZAP.format(sink=sink.url))
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
        while len(sink.keys) < EVENTS // 4:
            time.sleep(0.05)
        workers[0].kill()
        while len(acked) < EVENTS // 2:
            time.sleep(0.05)
        receivers[0].kill()  # its senders' next deliveries go to the other receiver
        for sender in senders:
            sender.join(timeout=300)
        assert len(acked) == EVENTS, "the surviving receiver did not take every event"
        deadline = time.monotonic() + 300
        while len(sink.keys) < EVENTS and time.monotonic() < deadline:
            time.sleep(0.2)

        assert set(sink.keys) == {str(n) for n in range(EVENTS)}, "an acknowledged event was lost"
        for n, keys in sink.keys.items():  # a repeat is the step in flight at the kill
            assert len(set(keys)) == 1, (n, keys)
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
