"""Where run history lives: the Prefect server zapflow talks to.

If ``PREFECT_API_URL`` is set (environment or Prefect profile), zapflow uses that server.
Otherwise it runs its own: ``prefect server start`` on 127.0.0.1:4200 (UI included), detached,
with its SQLite database under the project's state folder (``./.zapflow``, or ``$ZAPFLOW_HOME``),
started on first use and reused by every later command until ``zapflow server stop``. Its port
is ``ZAPFLOW_PREFECT_PORT`` (4200 by default); a server another folder started is not shared
unless ``ZAPFLOW_SHARE_PREFECT=1``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from connectors._errors import ZapError

DEFAULT_PORT = 4200
START_TIMEOUT = 120.0

# Task runs reach the server as events; batching its recorder lets it keep up with bursts
# (../shared/prefect-ceilings.md: ~30 recorded/s unbatched, 135-153/s at 100). The event
# persister and the automations' triggers read events one at a time by default; in batches the
# server records a burst's history with less CPU (zap runs 113 -> 135/s, bench_compare).
SERVER_SETTINGS = {
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE": "200",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_READ_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TRIGGERS_READ_BATCH_SIZE": "100",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    # glibc gives each thread that allocates an arena of its own; the server's threads
    # (uvicorn, its services) left most of theirs half empty.
    "MALLOC_ARENA_MAX": "2",
}


class ServerError(ZapError):
    """The Prefect server could not be reached or started."""


def state_dir() -> Path:
    return Path(os.environ.get("ZAPFLOW_HOME", ".zapflow")).resolve()


def _pid_file() -> Path:
    return state_dir() / "prefect-server.pid"


def log_file() -> Path:
    return state_dir() / "prefect-server.log"


def configured_api_url() -> str | None:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(f"{api_url.rstrip('/')}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def own_port() -> int:
    """The port of this folder's own Prefect server: ``ZAPFLOW_PREFECT_PORT``, else 4200. Give
    each zapflow folder on one machine its own, so their run histories stay apart."""
    raw = os.environ.get("ZAPFLOW_PREFECT_PORT", "").strip()
    if not raw:
        return DEFAULT_PORT
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise ServerError(f"ZAPFLOW_PREFECT_PORT={raw!r} is not a port number (1-65535)")
    return int(raw)


def own_api_url(port: int | None = None) -> str:
    return f"http://127.0.0.1:{port or own_port()}/api"


OWNER_VARIABLE = "zapflow_home"
"""A Prefect variable on zapflow's own server naming the state folder that started it."""


def _owner(url: str) -> str | None:
    try:
        reply = httpx.get(f"{url}/variables/name/{OWNER_VARIABLE}", timeout=5.0)
    except httpx.HTTPError:
        return None
    return str(reply.json().get("value")) if reply.status_code == 200 else None


def _claim(url: str) -> None:
    """Record on the server which folder's history it keeps (best effort)."""
    with contextlib.suppress(httpx.HTTPError):
        httpx.post(
            f"{url}/variables/",
            json={"name": OWNER_VARIABLE, "value": str(state_dir())},
            timeout=5.0,
        )


def running_pid() -> int | None:
    try:
        pid = int(_pid_file().read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


SERVER_NICENESS = 5
"""Below the receiver (0), above the thread running zaps (10): acknowledgements come first.
(Swapping the two, 5 and 10, measured the same within noise: bench_compare, three bursts each.)"""


def _lower_priority() -> None:
    with contextlib.suppress(OSError):
        os.nice(SERVER_NICENESS)


def start(port: int | None = None, *, announce: bool = True, python: str | None = None) -> str:
    """Start zapflow's own Prefect server (if it is not running) and wait until it answers.

    A server already answering on the port that another zapflow folder started keeps *that*
    folder's history: it is refused (the two histories would mix) unless
    ``ZAPFLOW_SHARE_PREFECT=1`` says to share it. ``python``: the interpreter to run it with,
    when not this one (one with the same Prefect installed; bench_topology's --prefect-python)."""
    port = port or own_port()
    url = own_api_url(port)
    if healthy(url):
        owner = _owner(url)
        sharing = os.environ.get("ZAPFLOW_SHARE_PREFECT", "").lower() in ("1", "true", "yes")
        if owner is not None and owner != str(state_dir()) and not sharing:
            raise ServerError(
                f"the Prefect server on {ui_url(url)} keeps the run history of another "
                f"zapflow folder ({owner}); give this one its own with "
                "ZAPFLOW_PREFECT_PORT=<another port>, or share that server with "
                "ZAPFLOW_SHARE_PREFECT=1"
            )
        if running_pid() is None and announce:
            print(
                f"Using the Prefect server already answering on {ui_url(url)} "
                "(not started from this folder).",
                file=sys.stderr,
            )
        return url
    home = state_dir()
    (home / "prefect").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **SERVER_SETTINGS, "PREFECT_HOME": str(home / "prefect")}
    env.pop("PREFECT_API_URL", None)
    # The UI asks the server where its API is; without this it says 4200 whatever the port.
    env["PREFECT_UI_API_URL"] = url
    if announce:
        print(
            f"Starting the Prefect server on {url.removesuffix('/api')} "
            f"(history in {home}/prefect; takes ~20 s the first time) …",
            file=sys.stderr,
        )
    with open(log_file(), "ab") as log:
        proc = subprocess.Popen(
            [
                python or sys.executable,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            # Below the receiver: recording history can lag a burst; acknowledging cannot.
            preexec_fn=_lower_priority,
        )
    _pid_file().write_text(str(proc.pid))
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if healthy(url):
            _claim(url)
            return url
        if proc.poll() is not None:
            tail = log_file().read_text(errors="replace")[-2000:]
            raise ServerError(
                f"the Prefect server exited (code {proc.returncode}); "
                f"its log ({log_file()}) ends with:\n{tail}"
            )
        time.sleep(0.5)
    raise ServerError(
        f"the Prefect server did not answer within {START_TIMEOUT:.0f} s; see {log_file()}"
    )


def stop() -> bool:
    """Stop zapflow's own server; False if it was not running."""
    pid = running_pid()
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    for _ in range(100):
        if running_pid() is None:
            break
        time.sleep(0.1)
    _pid_file().unlink(missing_ok=True)
    return True


def ensure_api() -> str:
    """The API URL to use: the configured one, else zapflow's own server (started if needed)."""
    url = configured_api_url()
    if url:
        if not healthy(url, timeout=5.0):
            raise ServerError(f"PREFECT_API_URL={url} does not answer; is that server running?")
        return url
    return start()


TESTED_PREFECT = "3.9.1"
"""The Prefect release zapflow's recording (below Prefect's public API) was tested with: the
exact pin of pyproject.toml and requirements.lock."""


def version_warnings(api_url: str | None) -> list[str]:
    """What differs from the Prefect zapflow was tested with — this process's Prefect and, when
    it answers, the server's — each with what to do; [] when both are the tested release."""
    import prefect

    found = []
    if prefect.__version__ != TESTED_PREFECT:
        found.append(
            f"Prefect {prefect.__version__} is installed, but zapflow was tested with "
            f"{TESTED_PREFECT}: step states may be recorded wrongly or not at all. Install the "
            "tested set: .venv/bin/pip install -c requirements.lock -e ."
        )
    if api_url:
        try:
            answer = httpx.get(f"{api_url.rstrip('/')}/admin/version", timeout=5.0)
            remote = answer.json() if answer.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            remote = None
        if isinstance(remote, str) and remote != TESTED_PREFECT:
            found.append(
                f"the Prefect server at {api_url} is version {remote}, but zapflow was tested "
                f"with {TESTED_PREFECT}: runs may not be recorded as expected. Run a "
                f"{TESTED_PREFECT} server there, or unset PREFECT_API_URL to use zapflow's own."
            )
    return found


@contextlib.contextmanager
def using_api(url: str) -> Iterator[None]:
    """Point Prefect's client (in this process) at ``url``."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield


@contextlib.contextmanager
def api() -> Iterator[str]:
    """Prefect's client pointed at the run history (``ensure_api``) while inside; yields its
    URL. Raises ``ServerError`` when there is none to be had."""
    url = ensure_api()
    with using_api(url):
        yield url


def ui_url(api_url: str) -> str:
    return api_url.rstrip("/").removesuffix("/api")
