"""`zapflow serve` as a user runs it: a real process receiving webhooks, running zaps with run
history, following the zap folder, and stopping gracefully."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from serve_process import Serve, ledger

pytest_plugins = ["cinnox_sandbox_fixtures"]
pytestmark = pytest.mark.usefixtures("prefect_api")

CATCH = """\
zap: {zap_id}
trigger: {{app: builtin, event: catch_hook}}
steps:
  - id: name
    action: builtin.format_text
    input: {{transform: titlecase, value: "{{{{ trigger.customer }}}}"}}
"""
MISSED = """\
zap: missed-to-space
trigger: {app: cinnox, event: missed_enquiry, connection: sandbox}
steps:
  - id: enquiry
    action: cinnox.get_enquiry_detail
    input: {display_case_number: "{{ trigger.displayCaseNumber }}"}
  - id: space
    action: cinnox.send_im_to_room
    input:
      room_id: 6601b7e2a9c84d3f5e0d1a01
      text: "Missed {{ trigger.displayCaseNumber }} from {{ steps.enquiry.visitorName }}"
"""


def completed_runs(zap_id: str, expect: int, timeout: float = 30) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    async def read() -> list:
        async with get_client() as client:
            deadline = time.monotonic() + timeout
            while True:
                runs = await client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"zap:{zap_id}"]))
                )
                done = [r for r in runs if r.state and r.state.is_final()]
                if len(done) >= expect or time.monotonic() > deadline:
                    return done
                await asyncio.sleep(0.2)

    return asyncio.run(read())


def task_runs(flow_run_id: object) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read() -> list:
        async with get_client() as client:
            deadline = time.monotonic() + 15
            while True:  # task runs are recorded from events, a moment after the flow run ends
                found = await client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
                )
                if found and all(t.state and t.state.is_final() for t in found):
                    return found
                if time.monotonic() > deadline:
                    return found
                await asyncio.sleep(0.2)

    return asyncio.run(read())


def test_serve_runs_hooks_follows_the_folder_and_stops_gracefully(
    tmp_path, prefect_api, cinnox_sandbox
):
    folder = tmp_path / "zaps"
    folder.mkdir()
    (folder / "greet.yaml").write_text(CATCH.format(zap_id="greet-serve"))
    (folder / "missed.yaml").write_text(MISSED)
    signed = CATCH.format(zap_id="signed-serve").replace(
        "event: catch_hook}", "event: catch_hook, options: {secret_env: ZAPFLOW_TEST_NEVER_SET}}"
    )
    (folder / "signed.yaml").write_text(signed)
    env = {
        "PREFECT_API_URL": prefect_api,
        "ZAPFLOW_CINNOX_SANDBOX_APP_ID": cinnox_sandbox.app_id,
        "ZAPFLOW_CINNOX_SANDBOX_APP_TOKEN": cinnox_sandbox.token,
        "ZAPFLOW_CINNOX_SANDBOX_BASE_URL": cinnox_sandbox.base_url,
    }
    serve = Serve(folder, tmp_path / "home", env)
    try:
        hook = serve.wait_for(r"catch hook of greet-serve: (\S+)").group(1)
        cinnox = serve.wait_for(r"cinnox connection sandbox: (\S+)/<channel>").group(1)
        # A zap that cannot be served (its signing secret is not set) is that zap's problem.
        serve.wait_for(
            r"zap 'signed-serve' wants signed deliveries but \$ZAPFLOW_TEST_NEVER_SET .* is not "
            r"set: zap 'signed-serve' is not served until it is"
        )
        assert not any("catch hook of signed-serve" in line for line in serve.seen)

        # A catch hook delivery becomes a recorded zap run.
        reply = httpx.post(hook, json={"customer": "chan tai man"}, timeout=10)
        assert reply.status_code == 200, reply.text
        event_id = reply.json()["event_id"]
        (run,) = completed_runs("greet-serve", 1)
        assert run.state.name == "Completed" and run.state.message == "1 events: 1 completed"
        assert "live" in run.tags and run.name.startswith("greet-serve ← builtin.catch_hook live")
        (step,) = task_runs(run.id)
        assert step.name == f"name ← builtin.catch_hook {event_id[:12]}"
        assert step.state.name == "Completed"
        (row,) = ledger(tmp_path / "home", "greet-serve")
        assert (row.event_id, row.state, row.flow_run_id) == (event_id, "completed", str(run.id))

        # CINNOX → receiver (after the challenge) → zap → an IM in the sandbox's Space.
        subscribed = cinnox_sandbox.subscribe("inquiry", f"{cinnox}/inquiry")
        assert subscribed.status_code == 200, subscribed.text
        emitted = cinnox_sandbox.control.emit("missed_enquiry")
        case = emitted["event"]["displayCaseNumber"]
        (missed_run,) = completed_runs("missed-to-space", 1)
        assert missed_run.state.name == "Completed", missed_run.state.message
        ims = [i["request"]["messages"][0]["text"] for i in cinnox_sandbox.control.sent("im")]
        assert any(text.startswith(f"Missed {case} from ") for text in ims), ims

        # A delivery CINNOX's reading cannot place (a status nobody documented) is kept and
        # acknowledged, serve warns, and once the reading knows the status it runs the zap.
        odd = {**emitted["event"], "status": "Abandoned", "date": "2026-03-02T23:59:00+08:00"}
        kept = httpx.post(f"{cinnox}/inquiry", json=odd, timeout=10)
        assert kept.status_code == 200 and kept.json()["accepted"] == 0, kept.text
        serve.wait_for(r"WARNING: kept a cinnox delivery on sandbox/inquiry .*'Abandoned'")
        asyncio.run(_reprocess_with(tmp_path / "home", "abandoned", "Missed"))
        runs = completed_runs("missed-to-space", 2)
        assert [r.state.name for r in runs] == ["Completed", "Completed"]

        # A new zap file is picked up without a restart.
        (folder / "later.yaml").write_text(CATCH.format(zap_id="added-later"))
        later = serve.wait_for(r"catch hook of added-later: (\S+)", timeout=15).group(1)
        assert httpx.post(later, json={"customer": "b"}, timeout=10).status_code == 200
        assert len(completed_runs("added-later", 1)) == 1

        # A removed one stops: its hook is unknown from then on.
        (folder / "later.yaml").unlink()
        serve.wait_for(r"zap 'added-later' removed", timeout=15)
        deadline = time.monotonic() + 5
        while (gone := httpx.post(later, json={}, timeout=10)).status_code == 200:
            assert time.monotonic() < deadline, "the removed zap's hook still answers"
            time.sleep(0.05)
        assert gone.status_code == 404 and "no such hook" in gone.json()["error"]
    finally:
        code = serve.stop()
    assert code == 0
    serve.wait_for("stopped; events not yet run stay in the inbox")


async def _reprocess_with(home, status: str, means: str) -> None:
    """`zapflow reprocess --unrecognised` after the enquiry reading learnt a status, on the
    inbox `zapflow serve` shares."""
    from connectors.cinnox import reading
    from flows.intake import unrecognised
    from flows.intake.inbox import Inbox

    with pytest.MonkeyPatch.context() as patch:
        known = {**reading.STATUSES["inquiry"], status: means}
        patch.setitem(reading.STATUSES, "inquiry", known)
        async with await Inbox.open(f"sqlite:///{home / 'inbox.db'}") as inbox:
            (outcome,) = await unrecognised.reprocess(inbox, await unrecognised.listing(inbox))
    assert outcome.error is None and outcome.events[0].trigger == "missed_enquiry"


SERVE_ON_CHOSEN_SERVER = """
import sys, time
from pathlib import Path
from flows import server
from flows.intake.serve import StopHandle, serve_in_thread

api, folder, port = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
stop, failure = StopHandle(), []
with server.using_api(api):  # as `zapflow serve` does with the server it chose
    worker = serve_in_thread(folder, stop, failure.append, port=port, live_idle=1.0,
                             report=lambda line: print(line, flush=True))
    time.sleep(float(sys.argv[4]))
    stop.request()
    worker.join(60)
print("failed:", failure, flush=True)
"""


def test_runs_are_recorded_on_the_server_zapflow_chose_not_prefects_default(prefect_api, tmp_path):
    """`zapflow serve` runs zaps on a thread of its own; the Prefect server zapflow chose (its
    own, when PREFECT_API_URL is not set) is a setting of the main thread's context, which that
    thread must carry — or the runs land in Prefect's in-process default server, unseen."""
    import os
    import subprocess
    import sys

    from serve_process import free_port

    folder = tmp_path / "zaps"
    folder.mkdir()
    (folder / "chosen.yaml").write_text(CATCH.format(zap_id="chosen-server"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(ZAPFLOW_HOME=str(tmp_path / "home"), PREFECT_HOME=str(tmp_path / "prefect"))
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE_ON_CHOSEN_SERVER, prefect_api, str(folder), str(port), "12"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        hook = ""
        for line in proc.stdout:
            if "catch hook of chosen-server:" in line:
                hook = line.split(": ", 1)[1].strip()
                break
        assert hook, "serve did not print its hook"
        assert httpx.post(hook, json={"customer": "ada lovelace"}).status_code == 200
        (run,) = completed_runs("chosen-server", expect=1)
        assert run.state.is_completed()
    finally:
        proc.wait(60)
    assert "failed: []" in proc.stdout.read()
