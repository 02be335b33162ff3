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
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from harness import MakeBody, environment, free_port, missed_enquiry

ZAP = """\
zap: bench-missed-enquiry
trigger: {{app: builtin, event: catch_hook}}
steps:
  - id: sms
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


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def start_zapflow(sink_url: str) -> tuple[str, MakeBody, list[int], Callable[[], None]]:
    from flows import server

    home = Path(tempfile.mkdtemp(prefix="zapflow-bench-zapflow-"))
    (home / "zaps").mkdir()
    (home / "zaps" / "bench.yaml").write_text(ZAP.format(sink=sink_url))
    prefect_env = {"ZAPFLOW_HOME": str(home), "PREFECT_SERVER_UI_ENABLED": "false"}
    with environment(**prefect_env):
        api_url = server.start(free_port(), announce=False)
        server_pid = server.running_pid()
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_API_URL": api_url,
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
        serve.terminate()  # graceful: stops accepting, finishes the runs in hand
        with contextlib.suppress(subprocess.TimeoutExpired):
            serve.wait(60)
        if serve.poll() is None:
            serve.kill()
            serve.wait()
        if server_pid:
            threading.Thread(target=_reap, args=(server_pid,), daemon=True).start()
        with environment(**prefect_env):
            server.stop()
        log.close()
        if os.environ.get("BENCH_KEEP"):  # to look into the inbox, ledger and serve.log after
            print(f"zapflow's state kept in {home}", file=sys.stderr)
        else:
            shutil.rmtree(home, ignore_errors=True)

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
    pids = [serve.pid] + ([server_pid] if server_pid else [])
    return hook, missed_enquiry, pids, stop
