"""Step checkpoints: a zap run resumed after a crash starts after its last completed step. The
issue's own case: catch hook → an "SMS" → a delay → an "IM"; `zapflow serve` is killed with
SIGKILL while the runs wait in their delay, and started again: no SMS is sent twice, every IM
is sent once, and the IM reads the SMS step's output from its checkpoint."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from serve_process import Serve, free_port, ledger

pytestmark = pytest.mark.usefixtures("prefect_api")

ZAP = """\
zap: sms-then-im
trigger: {{app: builtin, event: catch_hook}}
steps:
  - id: sms
    action: http.request
    input: {{method: POST, url: "{sink}/sms", json: {{n: "{{{{ trigger.n }}}}"}},
             send_idempotency_key: true}}
  - id: wait
    action: builtin.delay
    input: {{for: 3s}}
  - id: im
    action: http.request
    input:
      method: POST
      url: "{sink}/im"
      json: {{n: "{{{{ trigger.n }}}}", sms: "{{{{ steps.sms.body.id }}}}"}}
      send_idempotency_key: true
"""


class Sink:
    """The apps on the other side: what each path received, per event number."""

    def __init__(self) -> None:
        self.got: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(
            lambda: defaultdict(list)
        )
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with sink.lock:
                    seen = sink.got[self.path.strip("/")][str(body["n"])]
                    seen.append({**body, "key": self.headers.get("idempotency-key")})
                    answer = {"id": f"{self.path.strip('/')}-{body['n']}-{len(seen)}"}
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(json.dumps(answer).encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self, path: str) -> dict[str, int]:
        with self.lock:
            return {n: len(v) for n, v in self.got[path].items()}


def checkpoints(home: Any, pairs: list[tuple[str, str]]) -> dict:
    from flows.intake.inbox import Inbox

    async def read() -> dict:
        inbox = await Inbox.open(f"sqlite+aiosqlite:///{home / 'inbox.db'}")
        try:
            return await inbox.load_steps(pairs)
        finally:
            await inbox.close()

    return asyncio.run(read())


def test_a_run_resumed_after_sigkill_never_repeats_a_completed_step(tmp_path, prefect_api):
    sink = Sink()
    folder = tmp_path / "zaps"
    folder.mkdir()
    (folder / "zap.yaml").write_text(ZAP.format(sink=sink.url))
    home, port = tmp_path / "home", free_port()
    env = {"PREFECT_API_URL": prefect_api}

    first = Serve(folder, home, env, port=port)
    hook = first.wait_for(r"catch hook of sms-then-im: (\S+)").group(1)
    ids = []
    for n in ("1", "2"):
        reply = httpx.post(hook, json={"n": n}, timeout=10)
        assert reply.status_code == 200
        ids.append(reply.json()["event_id"])
    pairs = [(event_id, "sms-then-im") for event_id in ids]
    deadline = time.monotonic() + 30
    while len(done := checkpoints(home, pairs)) < 2:  # both SMS sent and checkpointed
        assert time.monotonic() < deadline, (done, first.output())
        time.sleep(0.05)
    assert sink.count("sms") == {"1": 1, "2": 1} and sink.count("im") == {}
    first.kill()  # mid-delay

    second = Serve(folder, home, env, port=port)
    try:
        deadline = time.monotonic() + 60
        while sink.count("im") != {"1": 1, "2": 1}:
            assert time.monotonic() < deadline, (sink.count("im"), second.output())
            time.sleep(0.1)
        deadline = time.monotonic() + 30
        while True:
            rows = ledger(home, "sms-then-im")
            if len(rows) == 2 and all(r.state == "completed" for r in rows):
                break
            assert time.monotonic() < deadline, rows
            time.sleep(0.2)
    finally:
        code = second.stop()
    assert code == 0, second.output()
    assert sink.count("sms") == {"1": 1, "2": 1}, "a completed step ran again"
    assert sink.count("im") == {"1": 1, "2": 1}
    for n in ("1", "2"):  # the IM read the SMS step's output from the checkpoint
        assert sink.got["im"][n][0]["sms"] == f"sms-{n}-1"
    assert len(rows) == 2
    # The last step's outcome is in the run's end (the ledger), not a checkpoint of its own.
    stored = checkpoints(home, pairs)
    assert all(set(steps) == {"sms", "wait"} for steps in stored.values()), stored
    assert stored[pairs[0]]["sms"] == ("completed", stored[pairs[0]]["sms"][1])
    assert stored[pairs[0]]["sms"][1]["body"] == {"id": "sms-1-1"}
    # The runs were parked in their delay (stored, not in memory) and resumed after it.
    assert stored[pairs[0]]["wait"][0] == "completed"
    assert stored[pairs[0]]["wait"][1]["waited_seconds"] == 3.0
