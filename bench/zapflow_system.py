"""zapflow as a benchmark system: `zapflow serve` with one zap, its own Prefect server.

The zap is the other systems' workflow: a catch hook receives the missed enquiry
``{id, displayCaseNumber, phone, sent}`` and one ``http.request`` step POSTs the SMS
``{recipient, text, sent, id}`` to the sink. `zapflow serve` runs as a user runs it (its own
process, SQLite inbox under a temporary ZAPFLOW_HOME); the Prefect server is a throwaway one
started like zapflow's own (SQLite, task-run recorder batched, UI off).
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from harness import MakeBody, ThrowawayPrefect, free_port, missed_enquiry

ZAP = """\
zap: bench-missed-enquiry
trigger: {{app: builtin, event: catch_hook}}
steps:
{before}  - id: sms
    action: http.request
    input:
      method: POST
      url: {sink}
      json:
        recipient: "{{{{ trigger.phone }}}}"
        text: "Sorry we missed you {{{{ trigger.displayCaseNumber }}}}"
        sent: "{{{{ trigger.sent }}}}"
        id: "{{{{ trigger.id }}}}"
"""


BEFORE_STEP = """\
  - id: tidy{i}
    action: builtin.format_text
    input: {{transform: titlecase, value: "case {{{{ trigger.displayCaseNumber }}}}"}}
"""


def start_zapflow(sink_url: str) -> tuple[str, MakeBody, list[int], Callable[[], None]]:
    """``ZAPFLOW_BENCH_STEPS=N`` (default 1) puts N-1 formatter steps before the SMS: each of
    them is checkpointed before the next step acts (the SMS, the last, goes with the run's
    end), so it measures what step checkpoints cost."""
    prefect = ThrowawayPrefect("zapflow-bench-zapflow-")
    home = prefect.home
    (home / "zaps").mkdir()
    steps = int(os.environ.get("ZAPFLOW_BENCH_STEPS", "1"))
    before = "".join(BEFORE_STEP.format(i=i) for i in range(1, steps))
    (home / "zaps" / "bench.yaml").write_text(ZAP.format(sink=sink_url, before=before))
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect.api_url,
        "PREFECT_HOME": str(home / "client"),
        "ZAPFLOW_HOME": str(home),
        "COLUMNS": "300",
    }
    serve = subprocess.Popen(
        [sys.executable, "-c", "from flows.cli import main; main()", "serve", str(home / "zaps")]
        + ["--port", str(port)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    log = open(home / "serve.log", "a")  # noqa: SIM115 - closed by stop()

    def read() -> None:
        assert serve.stdout is not None
        for line in serve.stdout:
            log.write(line)
            log.flush()
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()

    def stop() -> None:
        # SIGTERM is graceful: it stops accepting and finishes the runs in hand.
        prefect.stop(serve, grace=60)
        log.close()

    hook = None
    deadline = time.time() + 90
    try:
        while hook is None:
            if serve.poll() is not None or time.time() > deadline:
                raise RuntimeError(
                    "zapflow serve did not start: " + (home / "serve.log").read_text()[-2000:]
                )
            with contextlib.suppress(queue.Empty):
                line = lines.get(timeout=0.2)
                found = re.search(r"catch hook of bench-missed-enquiry: (\S+)", line)
                hook = found.group(1) if found else None
    except BaseException:
        stop()
        raise
    pids = [serve.pid] + ([prefect.pid] if prefect.pid else [])
    return hook, missed_enquiry, pids, stop
