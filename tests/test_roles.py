"""`zapflow serve --role receiver|worker` on one PostgreSQL inbox, as on several machines: a
receiver accepts, two workers run the zaps (woken by PostgreSQL's notifications, not by the
receiver), one worker is SIGKILLed mid-stream, and every acknowledged event still runs once;
`zapflow status` lists each process with its role and the poller it holds."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from serve_process import Serve
from test_crash import ZAP, Sender, Sink
from topology import fresh_databases  # bench's launcher of the topology (conftest)
from typer.testing import CliRunner

from flows.cli import app
from flows.intake.db import runs
from flows.intake.inbox import Inbox

pytestmark = pytest.mark.usefixtures("prefect_api")
PG_URL = os.environ.get("ZAPFLOW_TEST_POSTGRES_URL")

POLL_ZAP = """\
zap: watch-orders
trigger:
  app: http
  event: new_items
  options: {{url: "{sink}/items", items_path: items, id_field: n, interval: 1s}}
steps:
  - {{id: n, action: builtin.lookup, input: {{key: a, table: {{a: 1}}}}}}
"""


@pytest.fixture
def shared_inbox() -> Iterator[str]:
    """A PostgreSQL database of its own, as the machines of one installation share."""
    if not PG_URL:
        pytest.skip("several machines share a PostgreSQL inbox: set ZAPFLOW_TEST_POSTGRES_URL")
    with fresh_databases(PG_URL, "zapflow_roles") as (url,):
        yield url


def completed_runs(url: str, zap: str, timeout: float = 30.0) -> list[Any]:
    """The run ledger's rows of ``zap`` (event, state, worker, flow run) once every one is
    completed: a run's row is committed just after its action (group commits)."""

    async def read() -> list[Any]:
        async with await Inbox.open(url) as inbox, inbox.engine.connect() as conn:
            query = sa.select(runs.c.event_id, runs.c.state, runs.c.worker, runs.c.flow_run_id)
            return list((await conn.execute(query.where(runs.c.zap == zap))).all())

    deadline = time.monotonic() + timeout
    while True:
        rows = asyncio.run(read())
        if {r.state for r in rows} == {"completed"}:
            return rows
        assert time.monotonic() < deadline, {r.state for r in rows}
        time.sleep(0.2)


def _sample(text: str, name: str) -> float:
    """One sample's value from Prometheus' text format."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name} in:\n{text}")


def test_a_receiver_and_two_workers_run_every_event_once_through_a_worker_kill(
    tmp_path: Path, prefect_api: str, shared_inbox: str
) -> None:
    sink = Sink()
    folder = tmp_path / "zaps"
    folder.mkdir()
    (folder / "crash.yaml").write_text(ZAP.format(sink=sink.url))
    (folder / "watch.yaml").write_text(POLL_ZAP.format(sink=sink.url))
    env = {"PREFECT_API_URL": prefect_api}
    inbox = ["--inbox", shared_inbox]

    receiver = Serve(folder, tmp_path / "rx", env, extra=["--role", "receiver", *inbox])
    workers = [
        Serve(folder, tmp_path / f"w{i}", env, extra=["--role", "worker", *inbox]) for i in (1, 2)
    ]
    try:
        hook = receiver.wait_for(r"catch hook of crash-notify: (\S+)").group(1)
        for worker in workers:
            worker.wait_for(r"^worker \(inbox postgresql")
        sender = Sender(hook, 300)
        sender.thread.start()
        deadline = time.monotonic() + 60
        while len(sink.keys) < 100 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(sink.keys) >= 100, workers[0].output()
        workers[0].kill()  # mid-stream, no goodbye: its claimed events go to the other
        sender.thread.join(timeout=120)
        assert not sender.thread.is_alive(), "the receiver did not take every event"
        deadline = time.monotonic() + 90
        while len(sink.keys) < 300 and time.monotonic() < deadline:
            time.sleep(0.1)

        assert set(sink.keys) == {str(i) for i in range(300)}, "an acknowledged event was lost"
        for n, keys in sink.keys.items():  # a repeat is the kill's step in flight: same key
            assert len(set(keys)) == 1, (n, keys)
        ran = completed_runs(shared_inbox, "crash-notify")
        assert len(ran) == 300
        ran_on = {r.worker.split(":")[1] for r in ran if r.worker}
        assert str(workers[1].proc.pid) in ran_on  # the survivor ran (and took over) events

        # What a dashboard scrapes: the receiver's deliveries, the survivor's runs and health.
        delivered = httpx.get(f"http://127.0.0.1:{receiver.port}/metrics", timeout=10).text
        assert (
            _sample(delivered, 'zapflow_deliveries_total{app="builtin",outcome="accepted"}') == 300
        )
        survivor = f"http://127.0.0.1:{workers[1].port}"
        assert httpx.get(f"{survivor}/readyz", timeout=10).json()["ready"] is True
        scraped = httpx.get(f"{survivor}/metrics", timeout=10).text
        assert _sample(scraped, 'zapflow_runs_total{state="completed",zap="crash-notify"}') >= 1
        assert _sample(scraped, "zapflow_claim_lag_seconds_count") >= 1
        assert _sample(scraped, 'zapflow_inbox_events{state="pending"}') == 0
        assert 'zapflow_step_seconds_bucket{le="0.1",step="notify",zap="crash-notify"}' in scraped

        listed = CliRunner().invoke(
            app, ["status", "--inbox", shared_inbox], env={"COLUMNS": "200"}
        )
        assert listed.exit_code == 0, listed.output
        assert listed.output.count(" receiver ") == 1, listed.output
        assert " worker " in listed.output and "waiting" in listed.output
        assert "pollers: watch-orders" in listed.output  # one worker holds the poller
    finally:
        for process in [receiver, *workers]:
            if process.proc.poll() is None:
                assert process.stop() == 0, process.output()
    # Stopped gracefully, the receiver and the survivor signed off; the killed one could not,
    # and shows as silent once its heartbeat is old.
    left = CliRunner().invoke(app, ["status", "--inbox", shared_inbox], env={"COLUMNS": "200"})
    assert left.output.count(" worker ") == 1 and " receiver " not in left.output, left.output
    assert f":{workers[0].proc.pid}:" in left.output
