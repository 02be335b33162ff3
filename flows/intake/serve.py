"""`zapflow serve`: receiver, inbox and dispatcher in one process, following the zap folder.

Zap files are re-read when they change: added and changed zaps take effect within a second,
removed ones stop. A changed file that is no longer valid keeps its previous version running
(and the problems are printed), so a typo never silently switches a zap off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from connectors import registry
from flows.errors import Problem, ZapError
from flows.intake.dispatcher import Dispatcher
from flows.intake.inbox import Inbox
from flows.intake.pollers import Pollers
from flows.intake.receiver import AppHook, Hooks, ZapHook, create_app, zap_secret
from flows.loader import find_zap_files, load_zap_file
from flows.model import Zap

log = logging.getLogger("zapflow.serve")


@dataclass
class ZapFolder:
    """The zaps of a folder, re-read when its files change."""

    folder: Path
    report: Callable[[str], None] = print
    by_file: dict[Path, Zap] = field(default_factory=dict)
    stamps: dict[Path, float] = field(default_factory=dict)

    @property
    def zaps(self) -> list[Zap]:
        return list(self.by_file.values())

    def refresh(self) -> bool:
        """Re-read added and changed files, forget removed ones; True if anything changed."""
        files = {p: p.stat().st_mtime for p in find_zap_files([self.folder]) if p.exists()}
        changed = False
        for path in set(self.by_file) - set(files):
            self.report(f"zap {self.by_file.pop(path).zap!r} removed ({path})")
            changed = True
        for path, stamp in files.items():
            if self.stamps.get(path) == stamp:
                continue
            self.stamps[path] = stamp
            try:
                zap = load_zap_file(path).zap
            except ZapError as exc:
                problems: list[Problem] = getattr(exc, "problems", [])
                kept = " (its previous version keeps running)" if path in self.by_file else ""
                self.report(f"{path} is not valid{kept}:\n" + "\n".join(map(str, problems)))
                continue
            verb = "changed" if path in self.by_file else "loaded"
            self.by_file[path] = zap
            self.report(f"zap {zap.zap!r} {verb} ({path})")
            changed = True
        for path in set(self.stamps) - set(files):
            self.stamps.pop(path)
        return changed


async def build_hooks(inbox: Inbox, zaps: list[Zap]) -> Hooks:
    hooks = Hooks()
    for zap in zaps:
        if not zap.enabled:
            continue
        trig = zap.trigger
        owner = registry.app(trig.app)
        if trig.app == "builtin" and trig.event == "catch_hook":
            token = await inbox.hook_token("zap", zap.zap)
            hooks.zaps[zap.zap] = ZapHook(zap, token, zap_secret(zap))
        elif owner.webhook is not None and trig.connection is not None:
            key = (trig.app, trig.connection)
            if key not in hooks.apps:
                token = await inbox.hook_token(trig.app, trig.connection)
                hooks.apps[key] = AppHook(owner, trig.connection, token)
    return hooks


def hook_urls(public_url: str, hooks: Hooks) -> list[str]:
    base = public_url.rstrip("/")
    lines = [
        f"  catch hook of {zid}: {base}/hooks/zap/{zid}/{h.token}" for zid, h in hooks.zaps.items()
    ]
    for (app, connection), hook in hooks.apps.items():
        url = f"{base}/hooks/{app}/{connection}/{hook.token}/<channel>"
        lines.append(f"  {app} connection {connection}: {url}")
    return lines


class _Server(uvicorn.Server):
    """uvicorn's server, minus its signal handling: it re-raises the signal after its own
    shutdown, which would end the process before the dispatcher drains and the inbox closes."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def request_exit(self) -> None:
        self.should_exit = True


class StopHandle:
    """Asks a running :func:`serve` to stop gracefully, from any thread (a signal handler)."""

    def __init__(self) -> None:
        self.requested = False
        self._lock = threading.Lock()
        self._target: tuple[asyncio.AbstractEventLoop, Callable[[], None]] | None = None

    def attach(self, loop: asyncio.AbstractEventLoop, request_exit: Callable[[], None]) -> None:
        with self._lock:
            self._target = (loop, request_exit)
            if self.requested:
                loop.call_soon_threadsafe(request_exit)

    def request(self) -> None:
        with self._lock:
            self.requested = True
            if self._target is not None:
                loop, request_exit = self._target
                with contextlib.suppress(RuntimeError):  # the loop already ended
                    loop.call_soon_threadsafe(request_exit)


def serve_until_signalled(folder: Path, **options: Any) -> None:
    """Run :func:`serve` until SIGINT or SIGTERM, then stop it gracefully (a second signal
    exits at once).

    The event loop runs in a thread of its own, the signals are taken on the main thread:
    Prefect's flow engine replaces the main thread's SIGTERM handler with one that crashes the
    flow run in progress, and a zap's live flow run is nearly always in progress.
    """
    stop = StopHandle()
    failure: list[BaseException] = []
    report: Callable[[str], None] = options.get("report", print)

    def run() -> None:
        try:
            asyncio.run(serve(folder, stop=stop, **options))
        except BaseException as exc:  # handed to the main thread
            failure.append(exc)

    def on_signal(signum: int, _frame: object) -> None:
        if stop.requested:
            report("stopping at once")
            os._exit(128 + signum)
        report("stopping: no new deliveries; finishing the runs in hand (again to force)")
        stop.request()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    worker = threading.Thread(target=run, name="zapflow-serve")
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failure:
        raise failure[0]


def quiet_run_logs(level: int = logging.WARNING) -> None:
    """Keep each flow and task run's INFO lines off the terminal (they still go to the run
    history): at a hundred runs a second, printing them costs more than running the zaps."""
    from prefect.logging.handlers import PrefectConsoleHandler

    names = ["", "prefect", "prefect.flow_runs", "prefect.task_runs"]
    for logger in (logging.getLogger(name) for name in names):
        for handler in logger.handlers:
            if isinstance(handler, PrefectConsoleHandler):
                handler.setLevel(max(handler.level, level))


async def serve(
    folder: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8787,
    public_url: str | None = None,
    inbox_url: str | None = None,
    concurrency: int = 50,
    live_idle: float = 5.0,
    report: Callable[[str], None] = print,
    started: asyncio.Event | None = None,
    stop: StopHandle | None = None,
) -> None:
    """Everything ``zapflow serve`` runs, until SIGINT/SIGTERM (when on the main thread) or
    ``stop.request()``; then stops accepting, finishes the runs in hand and returns."""
    public = public_url or f"http://{host}:{port}"
    quiet_run_logs()
    inbox = await Inbox.open(inbox_url)
    zaps = ZapFolder(folder, report)
    zaps.refresh()
    state = {"hooks": await build_hooks(inbox, zaps.zaps)}
    dispatcher = Dispatcher(inbox, lambda: zaps.zaps, concurrency=concurrency, live_idle=live_idle)
    pollers = Pollers(inbox, report=report, on_new=dispatcher.wake.set)
    pollers.update(zaps.zaps)
    app = create_app(
        inbox, lambda: state["hooks"], on_accept=dispatcher.wake.set, ready=lambda: dispatcher.alive
    )
    server = _Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off"))
    loop = asyncio.get_running_loop()
    if stop is not None:
        stop.attach(loop, server.request_exit)
    else:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, server.request_exit)

    async def follow_folder() -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                if zaps.refresh():
                    pollers.update(zaps.zaps)
                    state["hooks"] = await build_hooks(inbox, zaps.zaps)
                    report("hooks:\n" + "\n".join(hook_urls(public, state["hooks"])))
            except Exception as exc:  # keep serving what was loaded
                report(f"reloading {folder} failed: {exc}")

    async def keep_dispatching() -> None:
        while True:  # a dispatcher that crashes is reported and started again
            try:
                await dispatcher.run()
                return
            except Exception as exc:
                report(f"dispatcher failed ({type(exc).__name__}: {exc}); restarting it")
                await asyncio.sleep(1.0)

    dispatching = asyncio.create_task(keep_dispatching())
    following = asyncio.create_task(follow_folder())
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():
        await asyncio.sleep(0.01)
    if server.started:  # announce the URLs only once they answer
        report(f"receiver on {public}  ·  {len(zaps.zaps)} zap(s) from {folder}/")
        report("hooks:\n" + "\n".join(hook_urls(public, state["hooks"])))
        if started is not None:
            started.set()
    try:
        await serving  # returns on SIGINT/SIGTERM (uvicorn) or server.should_exit
    finally:
        # Graceful: no more deliveries are accepted; the dispatcher finishes the runs in hand;
        # what is still in the inbox stays there for the next start.
        following.cancel()
        await pollers.stop()
        dispatcher.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await dispatching
        await inbox.close()
        report("stopped; events not yet run stay in the inbox for the next start")
