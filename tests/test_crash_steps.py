"""Killed at random points, a zap's runs never repeat a completed step.

`zapflow serve` runs a three-step zap — an HTTP "SMS", a short delay (the run parks), an HTTP
"IM", both to a loopback sink that records each arrival with its time and idempotency key, and
refuses the first IM of every sixth event so that run fails and is autoreplayed — while a
sender delivers a few hundred events (redelivering what was not acknowledged). serve is killed
with SIGKILL at random moments (before a step, mid-step, parked in the delay or in an
autoreplay wait) twenty times, started again each time, then left to finish. Then: no
acknowledged event is lost; every run completed once; a
step arrived twice only if the kill fell while it was in flight (within moments of its first
arrival, before its checkpoint — or, for the last step, the run's end — was committed), and
then with the same idempotency key; a step that had completed before a kill never arrived
again.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from serve_process import Serve, free_port, ledger
from test_crash import Sender

pytestmark = pytest.mark.usefixtures("prefect_api")

EVENTS = 240
KILLS = 20
IN_FLIGHT = 0.5
"""A step's checkpoint (or its run's end) is committed within this many seconds of the step's
answer; a step first seen longer than this before a kill had completed before it."""

REFUSED_EVERY = 6
"""The IM sink refuses the first IM of every sixth event (503): that run fails and is
autoreplayed from its IM step a second later, so kills also fall in autoreplay waits."""

ZAP = """\
zap: crash-steps
trigger: {{app: builtin, event: catch_hook}}
autoreplay: [1s, 1s, 1s]
steps:
  - id: sms
    action: http.request
    retries: 5
    retry_delay: 0.2s
    input: {{method: POST, url: "{sink}/sms", json: {{n: "{{{{ trigger.n }}}}"}},
             send_idempotency_key: true}}
  - id: wait
    action: builtin.delay
    input: {{for: 0.6s}}
  - id: im
    action: http.request
    retries: 0
    input: {{method: POST, url: "{sink}/im", json: {{n: "{{{{ trigger.n }}}}"}},
             send_idempotency_key: true}}
"""


class Sink:
    """Arrivals per (path, event number): (monotonic time, idempotency key)."""

    def __init__(self) -> None:
        self.arrivals: dict[tuple[str, str], list[tuple[float, str]]] = defaultdict(list)
        self.refused: set[str] = set()
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                where, n = self.path.strip("/"), str(body["n"])
                with sink.lock:
                    refuse = where == "im" and int(n) % REFUSED_EVERY == 0
                    refuse = refuse and n not in sink.refused
                    if refuse:  # not an arrival: the app did not act
                        sink.refused.add(n)
                    else:
                        sink.arrivals[(where, n)].append(
                            (time.monotonic(), self.headers.get("idempotency-key", ""))
                        )
                if refuse:
                    self.send_response(503)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": true}')

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class PacedSender(Sender):
    """Delivers events 0..n-1 one every PACE seconds (redelivering until acknowledged)."""

    PACE = 0.12

    def run(self) -> None:
        import httpx

        with httpx.Client(timeout=5) as client:
            for i in range(self.n):
                while True:
                    try:
                        reply = client.post(
                            self.url, json={"n": i}, headers={"webhook-id": f"delivery-{i}"}
                        )
                        if reply.status_code == 200:
                            self.acked.add(str(i))
                            break
                    except httpx.HTTPError:
                        pass
                    self.failures += 1
                    time.sleep(0.1)
                time.sleep(self.PACE)


def test_twenty_random_sigkills_repeat_no_completed_step(tmp_path, prefect_api, figures):
    sink = Sink()
    folder = tmp_path / "zaps"
    folder.mkdir()
    (folder / "zap.yaml").write_text(ZAP.format(sink=sink.url))
    home, port = tmp_path / "home", free_port()
    env = {"PREFECT_API_URL": prefect_api}
    chance = random.Random(20261203)

    serve = Serve(folder, home, env, port=port)
    hook = serve.wait_for(r"catch hook of crash-steps: (\S+)").group(1)
    sender = PacedSender(hook, EVENTS)  # spread over every life of serve below
    sender.thread.start()
    kills: list[float] = []
    for _ in range(KILLS):
        serve.wait_for(r"catch hook of crash-steps", timeout=60)
        time.sleep(chance.uniform(0.3, 2.5))
        serve.kill()
        kills.append(time.monotonic())
        serve = Serve(folder, home, env, port=port)
    try:
        serve.wait_for(r"catch hook of crash-steps", timeout=60)
        sender.thread.join(timeout=300)
        assert not sender.thread.is_alive(), "the sender could not deliver everything"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            runs = ledger(home, "crash-steps")
            if len(runs) >= EVENTS and all(r.state == "completed" for r in runs):
                break
            time.sleep(0.5)
    finally:
        code = serve.stop()
    assert code == 0, serve.output()

    assert len(sender.acked) == EVENTS
    assert len(runs) == EVENTS and all(r.state == "completed" for r in runs), runs
    with sink.lock:
        arrivals = {k: list(v) for k, v in sink.arrivals.items()}
    numbers = {str(n) for n in range(EVENTS)}
    lost = {(step, n) for step in ("sms", "im") for n in numbers} - set(arrivals)
    two_keys = [k for k, seen in arrivals.items() if len({key for _, key in seen}) > 1]
    in_flight, completed_again = [], []
    for where, seen in arrivals.items():
        first = seen[0][0]
        for again, _ in seen[1:]:
            kills_between = [k for k in kills if first <= k <= again]
            if kills_between and kills_between[0] - first <= IN_FLIGHT:
                in_flight.append(where)
            else:
                completed_again.append(
                    (where, round(kills_between[0] - first, 3) if kills_between else None)
                )
    section = f"{KILLS} SIGKILLs at random points, {EVENTS} events, SMS → delay → IM"
    figures.record(section, "deliveries refused or cut by a kill (redelivered)", sender.failures)
    figures.record(section, "events lost", len(lost))
    figures.record(section, "in-flight steps sent again (same idempotency key)", len(in_flight))
    figures.record(section, "completed steps sent again", len(completed_again))
    figures.record(section, "steps sent under two keys", len(two_keys))
    replayed = [r for r in runs if r.autoreplays]
    figures.record(section, "IMs refused once (503), then autoreplayed", len(replayed))
    # Each refused IM went on (none is lost, above): autoreplayed, or — when a kill fell
    # between the refusal and its run's end — run again by the serve that took the run over.
    assert len(sink.refused) - KILLS <= len(replayed) <= len(sink.refused)
    assert lost == set()
    assert two_keys == []
    assert completed_again == [], completed_again
