"""`zapflow serve`: receiver, inbox, dispatcher, pollers and schedules, following the zap folder.

The receiver runs in a process of its own (``receiver_process``), started and watched from
here, so acknowledgements never wait behind zap runs; everything else runs in this process.

Zap files are re-read when they change: added and changed zaps take effect within a second,
removed ones stop. A changed file that is no longer valid keeps its previous version running
(and the problems are printed), so a typo never silently switches a zap off.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import uvicorn

from connectors._errors import ZapError
from connectors._rates import use_shared_store
from flows import metrics, rendering
from flows.intake import unrecognised
from flows.intake.dispatcher import HEARTBEAT_EVERY, HOST, Dispatcher, worker_identity
from flows.intake.folder import ZapFolder, build_hooks, hook_urls
from flows.intake.hooks import Hooks
from flows.intake.inbox import Inbox
from flows.intake.members import ROLES
from flows.intake.pollers import Pollers
from flows.intake.receiver_process import STATUS_EVERY, Server, status_line
from flows.intake.threaded import ThreadedInbox

log = logging.getLogger("zapflow.serve")


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


def serve_in_thread(
    folder: Path, stop: StopHandle, failed: Callable[[BaseException], None], **options: Any
) -> threading.Thread:
    """Start :func:`serve` on a thread of its own; ``failed`` gets what it raised.

    The thread runs in a copy of the caller's context: the Prefect server zapflow chose is a
    Prefect setting held in a context variable (``flows.server.using_api``), and a thread
    started with an empty context would fall back to Prefect's default — its in-process
    ephemeral server — so the runs would be recorded where nobody looks.
    """

    def run() -> None:
        try:
            asyncio.run(serve(folder, stop=stop, **options))
        except BaseException as exc:  # handed to the caller
            failed(exc)

    context = contextvars.copy_context()
    worker = threading.Thread(target=context.run, args=(run,), name="zapflow-serve")
    worker.start()
    return worker


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

    def on_signal(signum: int, _frame: object) -> None:
        if stop.requested:
            report("stopping at once")
            os._exit(128 + signum)
        report("stopping: no new deliveries; finishing the runs in hand (again to force)")
        stop.request()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    worker = serve_in_thread(folder, stop, failure.append, **options)
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


class _Wake(asyncio.DatagramProtocol):
    """The receiver process's nudges: events arrived, claim them now."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self.wake = wake

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.wake()


class ReceiverProcess:
    """The receiver (``flows.intake.receiver_process``), started, watched and stopped; its
    hook table goes to its standard input (the pipe's end tells it this process is gone)."""

    def __init__(self, args: list[str], health_url: str, hooks: Hooks) -> None:
        self.args, self.health_url = args, health_url
        self.table = hooks.to_line()
        self.proc: asyncio.subprocess.Process | None = None

    async def update(self, hooks: Hooks) -> None:
        """Serve these hooks from now on (a receiver started later gets them too)."""
        self.table = hooks.to_line()
        proc = self.proc
        if proc is not None and proc.returncode is None and proc.stdin is not None:
            with contextlib.suppress(OSError):  # it died: it is restarted with the new table
                proc.stdin.write(self.table)
                await proc.stdin.drain()

    async def status(self, ok: bool, reason: str) -> None:
        """Tell it whether the events it accepts are being run (its ``/readyz/running``)."""
        proc = self.proc
        if proc is not None and proc.returncode is None and proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.write(status_line(ok, reason))
                await proc.stdin.drain()

    async def start(self, timeout: float = 30.0) -> None:
        """Start it and wait until it answers; retried while its port is still taken (by the
        receiver of a `zapflow serve` that was just killed, which exits within a second)."""
        deadline = asyncio.get_running_loop().time() + timeout
        async with httpx.AsyncClient(timeout=1.0) as client:
            while True:
                if self.proc is None or self.proc.returncode is not None:
                    if asyncio.get_running_loop().time() > deadline:
                        raise ZapError(
                            f"the receiver did not start (exit code {self.proc.returncode})"
                            if self.proc
                            else "the receiver did not start"
                        )
                    if self.proc is not None:
                        await asyncio.sleep(0.5)
                    self.proc = await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-c",
                        _RECEIVER,
                        *self.args,
                        stdin=asyncio.subprocess.PIPE,
                    )
                    assert self.proc.stdin is not None
                    self.proc.stdin.write(self.table)
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(self.health_url)).status_code == 200:
                        return
                if asyncio.get_running_loop().time() > deadline:
                    await self.stop()
                    raise ZapError("the receiver did not answer within 30 s")
                await asyncio.sleep(0.05)

    async def stop(self, timeout: float = 15.0) -> None:
        """Stop accepting and answer the requests in flight; killed if it takes too long."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


_RECEIVER = "from flows.intake.receiver_process import main; main()"
RUNS_NICENESS = 10
DEFAULT_RETENTION = timedelta(days=7)
PURGE_EVERY = 3600.0


def ops_app(inbox: Inbox, dispatcher: Dispatcher, role: str) -> Any:
    """What a worker answers on its port (a receiver answers the same on its hook port):
    ``/healthz`` (the process is up), ``/readyz`` (the inbox answers and its events are being
    run: 503 saying why otherwise) and ``/metrics`` (``flows.metrics``)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok", "role": role, "worker": dispatcher.worker})

    async def readyz(_: Request) -> Response:
        ok, reason = dispatcher.health()
        try:
            counts: dict[str, Any] = {"inbox": await inbox.counts()}
        except Exception as exc:
            ok, reason, counts = False, f"the inbox cannot be read: {type(exc).__name__}", {}
        body = {"ready": ok, ("reason" if ok else "error"): reason, **counts}
        return JSONResponse(body, status_code=200 if ok else 503)

    async def metrics_page(_: Request) -> Response:
        body = await metrics.exposition(inbox.counts, lambda: unrecognised.waiting_count(inbox))
        return Response(body, media_type=metrics.CONTENT_TYPE)

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics_page, methods=["GET"]),
        ]
    )


async def serve(
    folder: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8787,
    public_url: str | None = None,
    inbox_url: str | None = None,
    concurrency: int = 50,
    live_idle: float = 5.0,
    max_body: int | None = None,
    retention: timedelta | None = DEFAULT_RETENTION,
    report: Callable[[str], None] = print,
    started: asyncio.Event | None = None,
    stop: StopHandle | None = None,
    on_hooks: Callable[[Hooks], None] | None = None,
    role: str = "all",
    metrics_port: int | None = None,
) -> None:
    """Everything ``zapflow serve`` runs, until SIGINT/SIGTERM (when on the main thread) or
    ``stop.request()``; then stops accepting, finishes the runs in hand and returns.

    ``role``: ``all`` (one machine: everything below), ``receiver`` (only accept deliveries
    into the inbox) or ``worker`` (only run zaps from it: dispatcher, pollers and schedules).
    The receiver runs in a process of its own (``flows.intake.receiver_process``); the
    dispatcher, pollers and schedules run here. ``on_hooks`` gets the hook table each time the
    receiver starts serving it (at start, and when the zaps change). A worker answers
    ``/healthz``, ``/readyz`` and ``/metrics`` on ``port``; with ``metrics_port`` a serve that
    also receives answers them there (its receiver answers its own on ``port``).
    """
    if role not in ROLES:
        raise ZapError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    receives, runs = role in ("all", "receiver"), role in ("all", "worker")
    public = public_url or f"http://{host}:{port}"
    local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # to reach our own ports
    quiet_run_logs()
    inbox = await Inbox.open(inbox_url)
    zaps = ZapFolder(folder, report)
    zaps.refresh()
    identity = worker_identity()
    claims: Inbox | None = None
    dispatcher: Dispatcher | None = None
    pollers: Pollers | None = None
    if runs:
        # The dispatcher's own inbox runs its transactions on a thread of their own, so they
        # never hold the write lock while this loop runs zaps (see flows.intake.threaded).
        claims = cast(Inbox, await ThreadedInbox.open(inbox_url))
        # App accounts' API rate limits are counted in the inbox, across every serve sharing it.
        use_shared_store(claims)
        dispatcher = Dispatcher(
            claims,
            lambda: zaps.zaps,
            concurrency=concurrency,
            live_idle=live_idle,
            zap_folder=Path(folder),
            worker=identity,
            role=role,
        )
        # Each zap's poller runs on one worker of all those sharing the inbox (a lease).
        pollers = Pollers(inbox, report=report, on_new=dispatcher.wake.set, holder=identity)
        pollers.update(zaps.zaps)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    if stop is not None:
        stop.attach(loop, stopping.set)
    else:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stopping.set)
    wake: asyncio.DatagramTransport | None = None
    receiver: ReceiverProcess | None = None
    hooks = Hooks()
    if receives:
        args = ["--host", host, "--port", str(port)]
        if dispatcher is not None:  # the receiver nudges this process's dispatcher
            wake, _ = await loop.create_datagram_endpoint(
                lambda: _Wake(dispatcher.nudged), local_addr=("127.0.0.1", 0)
            )
            args += ["--wake", str(wake.get_extra_info("sockname")[1])]
        args += ["--inbox", inbox_url] if inbox_url else []
        args += ["--max-body", str(max_body)] if max_body else []
        hooks = await build_hooks(inbox, zaps.zaps, report)
        receiver = ReceiverProcess(args, f"http://{local}:{port}/healthz", hooks)

    async def follow_folder() -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                if zaps.refresh():
                    if pollers is not None:
                        pollers.update(zaps.zaps)
                    if receiver is not None:
                        hooks = await build_hooks(inbox, zaps.zaps, report)
                        await receiver.update(hooks)
                        report("hooks:\n" + "\n".join(hook_urls(public, hooks)))
                        if on_hooks is not None:
                            on_hooks(hooks)
            except Exception as exc:  # keep serving what was loaded
                report(f"reloading {folder} failed: {exc}")

    async def keep_dispatching() -> None:
        assert dispatcher is not None
        while True:  # a dispatcher that crashes is reported and started again
            try:
                await dispatcher.run()
                return
            except Exception as exc:
                report(f"dispatcher failed ({type(exc).__name__}: {exc}); restarting it")
                await asyncio.sleep(1.0)

    async def keep_receiving() -> None:
        assert receiver is not None
        while not stopping.is_set():  # a receiver that dies is reported and started again
            assert receiver.proc is not None
            code = await receiver.proc.wait()
            if stopping.is_set():
                return
            report(f"the receiver exited (code {code}); restarting it")
            try:
                await receiver.start()
            except ZapError as exc:
                report(f"{exc}; trying again")
                await asyncio.sleep(1.0)

    async def keep_listening() -> None:
        """On PostgreSQL: hear of events any receiver commits, and claim them at once."""
        assert dispatcher is not None
        while True:
            try:
                listening = await inbox.listen(dispatcher.wake.set)
            except Exception as exc:  # the database is away: the idle poll still claims
                log.warning("listening for new events failed: %s; trying again", exc)
                await asyncio.sleep(5.0)
                continue
            if listening is None:
                return  # SQLite: one machine; the receiver nudges this process directly
            try:
                await listening.lost.wait()
            finally:
                await listening.close()
            dispatcher.wake.set()  # what was committed meanwhile
            await asyncio.sleep(1.0)

    async def beat_as_receiver() -> None:
        """A receiver-only process is listed by ``zapflow status`` (a worker's heartbeat is its
        dispatcher's)."""
        while True:
            with contextlib.suppress(Exception):
                await inbox.heartbeat(identity, HOST, role=role)
            await asyncio.sleep(HEARTBEAT_EVERY)

    async def tell_running() -> None:
        """Every STATUS_EVERY seconds: is Prefect's server there, and are runs draining? The
        receiver answers ``/readyz/running`` from it; when Prefect answers again after being
        away, the events waiting for it run at once."""
        from prefect.client.orchestration import get_client

        if dispatcher is None:  # a receiver alone: zap runs are the workers' business
            assert receiver is not None
            while True:
                await receiver.status(True, "receiver only: the workers run the zaps")
                await asyncio.sleep(STATUS_EVERY)
        down_since: datetime | None = None
        async with get_client() as client:
            while True:
                try:
                    async with asyncio.timeout(3.0):
                        error = await client.api_healthcheck()
                except TimeoutError:
                    error = TimeoutError("no answer within 3 s")
                if error is None:
                    if down_since is not None:
                        report("Prefect's server answers again; the events waiting run now")
                        dispatcher.prefect_back()
                    down_since = None
                    ok, reason = dispatcher.health()
                else:
                    if down_since is None:
                        down_since = datetime.now().astimezone()
                        report(
                            f"Prefect's server does not answer ({type(error).__name__}); "
                            "deliveries are still accepted and wait in the inbox"
                        )
                    ok = False
                    reason = (
                        f"Prefect unreachable since {down_since:%H:%M:%S} "
                        f"({type(error).__name__}: {error}); "
                        "accepted events wait in the inbox and run when it answers"
                    )
                if receiver is not None:
                    await receiver.status(ok, reason)
                await asyncio.sleep(STATUS_EVERY)

    async def keep_telling() -> None:
        while True:  # a probe that breaks is reported and started again
            try:
                await tell_running()
            except Exception as exc:
                report(f"watching Prefect's server failed ({type(exc).__name__}: {exc})")
                await asyncio.sleep(STATUS_EVERY)

    async def purge_old() -> None:
        """Forget events (and their runs in the ledger) processed longer ago than `retention`."""
        while retention is not None:
            try:
                purged = await inbox.purge(retention)
                await unrecognised.purge(inbox, retention)
                if purged:
                    report(f"purged {purged} events processed more than {retention} ago")
            except Exception as exc:  # the next round tries again
                report(f"purging old events failed: {exc}")
            await asyncio.sleep(PURGE_EVERY)

    dispatching = asyncio.create_task(keep_dispatching()) if dispatcher is not None else None
    tasks: list[asyncio.Task[None]] = []
    ops: Server | None = None
    ops_task: asyncio.Task[None] | None = None
    try:
        if receiver is not None:
            await receiver.start()
        if dispatcher is not None:
            # Acknowledging comes first: under a burst the runs wait in the inbox, not the
            # senders. (Linux nice values are per thread: this lowers the thread running zaps.)
            with contextlib.suppress(OSError):
                os.nice(RUNS_NICENESS)
        doing = {"all": "receiver", "receiver": "receiver only", "worker": "worker"}[role]
        where = f" on {public}" if receiver is not None else f" (inbox {inbox.describe()})"
        report(f"{doing}{where}  ·  {len(zaps.zaps)} zap(s) from {folder}/")
        if receiver is not None:
            report("hooks:\n" + "\n".join(hook_urls(public, hooks)))
            if on_hooks is not None:
                on_hooks(hooks)
            kept = await unrecognised.waiting_count(inbox)
            if kept:
                report(
                    f"{kept} deliveries wait as unrecognised (their app could not read them): "
                    "zapflow events --unrecognised"
                )
        if started is not None:
            started.set()
        tasks = [asyncio.create_task(follow_folder())]
        if receiver is not None:
            tasks += [asyncio.create_task(keep_receiving()), asyncio.create_task(keep_telling())]
        if dispatcher is not None:
            tasks += [asyncio.create_task(purge_old()), asyncio.create_task(keep_listening())]
            ops_port = port if receiver is None else metrics_port
            if ops_port is not None:
                ops = Server(
                    uvicorn.Config(
                        ops_app(inbox, dispatcher, role),
                        host=host,
                        port=ops_port,
                        log_level="warning",
                        lifespan="off",
                    )
                )
                ops_task = asyncio.create_task(ops.serve())
                report(f"health and metrics: http://{local}:{ops_port}/readyz, /metrics")
            if receiver is None:
                tasks.append(asyncio.create_task(keep_telling()))
        else:
            tasks.append(asyncio.create_task(beat_as_receiver()))
        await stopping.wait()
    finally:
        # Graceful: no more deliveries are accepted; the dispatcher finishes the runs in hand;
        # what is still in the inbox stays there for the next start.
        stopping.set()
        if receiver is not None:
            await receiver.stop()
        if ops is not None and ops_task is not None:
            ops.should_exit = True
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(ops_task, 5.0)
        for task in tasks:
            task.cancel()
        if pollers is not None:
            await pollers.stop()
        if dispatcher is not None:
            dispatcher.stop()
        if dispatching is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await dispatching
        if wake is not None:
            wake.close()
        rendering.shutdown()
        if claims is not None:
            use_shared_store(None)
            await claims.close()
        if dispatcher is None:
            with contextlib.suppress(Exception):
                await inbox.sign_off(identity)
        await inbox.close()
        report("stopped; events not yet run stay in the inbox for the next start")
