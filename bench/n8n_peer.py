"""n8n as a benchmark peer, driven through ../shared/peers/n8n (setup.sh, start.sh, workflow.json).

Its workflow takes ``POST /webhook/bench`` with a missed enquiry ``{id, displayCaseNumber, phone,
sent}``, answers at once ("responseMode": "onReceived"; a JSON body with Content-Length, kept
alive for 5 s) and POSTs the SMS ``{recipient, text, sent, id}`` to $SINK_URL; every execution is
saved. n8n is installed once under $N8N_DIR (default /tmp/n8n-peer); setup.sh reinstalls every
time it runs, so ``ensure_installed`` runs it only when the n8n executable is missing.

Each start gets a fresh state folder (database, executions, log) that links to the installed
node_modules, so runs neither see each other's executions nor touch the installation.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from harness import MakeBody, missed_enquiry, wait_until

PEER = Path(__file__).resolve().parents[2] / "shared" / "peers" / "n8n"
INSTALL = Path(os.environ.get("N8N_DIR", "/tmp/n8n-peer"))
PORT = int(os.environ.get("N8N_PORT", "5678"))


def installed() -> bool:
    return (INSTALL / "node_modules" / ".bin" / "n8n").exists()


def ensure_installed() -> None:
    """Install n8n with setup.sh (2.5-5 minutes) unless it is installed already."""
    if installed():
        return
    print(f"installing n8n into {INSTALL} with {PEER / 'setup.sh'} (a few minutes) …", flush=True)
    env = {**os.environ, "N8N_DIR": str(INSTALL)}
    subprocess.run(["bash", str(PEER / "setup.sh")], env=env, check=True, stdout=sys.stderr)


def start_n8n(sink_url: str) -> tuple[str, MakeBody, list[int], Callable[[], None]]:
    """Start n8n with its bench workflow posting to ``sink_url``; (hook URL, body, pids, stop)."""
    ensure_installed()
    hook = f"http://127.0.0.1:{PORT}/webhook/bench"
    with contextlib.suppress(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{PORT}/healthz", timeout=2)
        raise RuntimeError(f"something already answers on port {PORT}; stop it or set N8N_PORT")
    state = Path(tempfile.mkdtemp(prefix="zapflow-bench-n8n-"))
    (state / "node_modules").symlink_to(INSTALL / "node_modules")
    env = {**os.environ, "N8N_DIR": str(state), "SINK_URL": sink_url, "N8N_PORT": str(PORT)}
    out = subprocess.run(
        ["bash", str(PEER / "start.sh")], env=env, check=True, capture_output=True, text=True
    )
    pid = int(out.stdout.split()[-1])  # start.sh's setsid makes it the leader of its own group

    def stop() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
                time.sleep(0.2)
            os.killpg(pid, signal.SIGKILL)
        shutil.rmtree(state, ignore_errors=True)

    def ready() -> bool:
        # A probe event: 404 until the webhook is registered. Its SMS reaches the sink under an id
        # that no phase uses.
        if not Path(f"/proc/{pid}").exists():
            raise RuntimeError(f"n8n exited; its log: {state / 'n8n.log'}")
        probe = missed_enquiry(0, "n8n-probe", time.time())
        with contextlib.suppress(httpx.TransportError):
            return httpx.post(hook, json=probe, timeout=10).status_code == 200
        return False

    try:
        wait_until(ready, 60, "n8n's webhook did not answer")
    except Exception as exc:
        log = (state / "n8n.log").read_text(errors="replace")[-2000:]
        stop()
        raise RuntimeError(f"{exc}; n8n's log ended with:\n{log}") from exc
    except BaseException:
        stop()
        raise
    return hook, missed_enquiry, [pid], stop
