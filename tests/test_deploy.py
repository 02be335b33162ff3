"""`zapflow deploy`: one Prefect deployment per zap, kept in step with the zap folder, and a run
of one — started as the UI's Run starts it — executed by a real Prefect worker and entered in
the run ledger like serve's runs."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from typer.testing import CliRunner

from flows.cli import app
from flows.intake.inbox import Inbox
from flows.loader import load_zap_text
from flows.model import zap_version

ROOT = Path(__file__).resolve().parents[1]

GREET = """\
zap: greet-{suffix}
description: Greets whoever the hook names
concurrency: 2
trigger: {{app: builtin, event: catch_hook}}
steps:
  - id: hello
    action: builtin.format_text
    input: {{value: "hello {{{{ trigger.name }}}}", transform: titlecase}}
"""
OTHER = """\
zap: other-{suffix}
trigger: {{app: builtin, event: catch_hook}}
steps:
  - {{id: n, action: builtin.lookup, input: {{key: a, table: {{a: 1}}}}}}
"""


async def _deployment(name: str) -> Any:
    async with get_client() as client:
        return await client.read_deployment_by_name(f"zap/{name}")


def test_deploy_keeps_one_deployment_per_zap_and_a_worker_runs_one_into_the_ledger(
    tmp_path: Path, prefect_api: str
) -> None:
    suffix = uuid.uuid4().hex[:6]
    greet, other = f"greet-{suffix}", f"other-{suffix}"
    pool = f"zapflow-test-{suffix}"
    folder = tmp_path / "zaps"
    folder.mkdir()
    (folder / "greet.yaml").write_text(GREET.format(suffix=suffix))
    (folder / "other.yaml").write_text(OTHER.format(suffix=suffix))
    runner = CliRunner()

    made = runner.invoke(app, ["deploy", str(folder), "--pool", pool, "--project-dir", str(ROOT)])
    assert made.exit_code == 0, made.output
    assert f"made work pool {pool!r}" in made.output
    assert f"made deployment zap/{greet}" in made.output
    deployment = asyncio.run(_deployment(greet))
    zap = load_zap_text(GREET.format(suffix=suffix))
    assert deployment.version == zap_version(zap)
    assert set(deployment.tags) == {"zapflow", f"zap:{greet}", "app:builtin"}
    assert deployment.work_pool_name == pool
    assert deployment.parameters["zap"]["zap"] == greet
    limit = deployment.global_concurrency_limit  # the zap's `concurrency: 2`
    assert limit is not None and limit.limit == 2

    (folder / "other.yaml").unlink()  # the zap is gone: so is its deployment
    again = runner.invoke(app, ["deploy", str(folder), "--pool", pool, "--project-dir", str(ROOT)])
    assert again.exit_code == 0, again.output
    assert f"updated deployment zap/{greet}" in again.output
    assert f"deleted deployment zap/{other}" in again.output
    with pytest.raises(ObjectNotFound):
        asyncio.run(_deployment(other))

    # A run as the UI's "Run" makes it (the trigger's fields as the event), taken by a worker.
    inbox_url = f"sqlite+aiosqlite:///{tmp_path / 'inbox.db'}"

    async def start_run() -> str:
        async with get_client() as client:
            run = await client.create_flow_run_from_deployment(
                deployment.id, parameters={"event": {"name": "ada lovelace"}}
            )
            return str(run.id)

    flow_run_id = asyncio.run(start_run())
    worker = subprocess.run(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--run-once"],
        env={**os.environ, "PREFECT_API_URL": prefect_api, "ZAPFLOW_INBOX_URL": inbox_url},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert worker.returncode == 0, worker.stdout + worker.stderr

    async def finished() -> Any:
        async with get_client() as client:
            deadline = time.monotonic() + 60
            while True:
                run = await client.read_flow_run(uuid.UUID(flow_run_id))
                if run.state is not None and run.state.is_final():
                    return run
                assert time.monotonic() < deadline, run.state
                await asyncio.sleep(0.5)

    run = asyncio.run(finished())
    assert run.state.is_completed(), (run.state, worker.stdout + worker.stderr)

    async def ledger() -> Any:
        async with await Inbox.open(inbox_url) as inbox:
            [row] = await inbox.recent_runs(zap=greet)
            steps = await inbox.load_steps([(row.event_id, greet)])
            return row, steps

    row, steps = asyncio.run(ledger())
    assert row.state == "completed" and row.flow_run_id == flow_run_id
    assert row.zap_version == zap_version(zap)
    assert steps[(row.event_id, greet)]["hello"] == ("completed", {"output": "Hello Ada Lovelace"})
