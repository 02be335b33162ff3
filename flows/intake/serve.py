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
from flows.prefect_bridge import hand_over_in_bunches

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
    quiet_run_logs()
    process = _Serve(
        folder,
        host=host,
        port=port,
        public=public_url or f"http://{host}:{port}",
        inbox_url=inbox_url,
        role=role,
        report=report,
        on_hooks=on_hooks,
    )
    await process.open(stop)
    try:
        if role in ("all", "worker"):
            await process.set_up_working(concurrency, live_idle, retention, metrics_port)
        if role in ("all", "receiver"):
            await process.set_up_receiving(max_body)
        await process.run(started)
    finally:
        await process.close()


class _Serve:
    """One ``zapflow serve`` process: what every role shares (the inbox, the zap folder it
    follows, its identity, the stop) with its working part (dispatcher, pollers and schedules,
    health and metrics: ``set_up_working``) and its receiving part (the receiver process and the
    hooks it serves: ``set_up_receiving``), each of their loops kept alive until the stop."""

    def __init__(
        self,
        folder: Path,
        *,
        host: str,
        port: int,
        public: str,
        inbox_url: str | None,
        role: str,
        report: Callable[[str], None],
        on_hooks: Callable[[Hooks], None] | None,
    ) -> None:
        self.folder, self.host, self.port, self.public = folder, host, port, public
        self.local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # our own ports
        self.inbox_url, self.role, self.report, self.on_hooks = inbox_url, role, report, on_hooks
        self.identity = worker_identity()
        self.inbox: Inbox  # open() opens it
        self.zaps = ZapFolder(folder, report)
        self.stopping = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        # the working part
        self.claims: Inbox | None = None
        self.dispatcher: Dispatcher | None = None
        self.pollers: Pollers | None = None
        self.dispatching: asyncio.Task[None] | None = None
        self.retention: timedelta | None = None
        self.ops: Server | None = None
        self.ops_task: asyncio.Task[None] | None = None
        self.ops_port: int | None = None
        # the receiving part
        self.receiver: ReceiverProcess | None = None
        self.wake: asyncio.DatagramTransport | None = None
        self.hooks = Hooks()

    async def open(self, stop: StopHandle | None) -> None:
        self._on_signals(stop)  # from the start: a SIGTERM while starting stops gracefully too
        self.inbox = await Inbox.open(self.inbox_url)
        self.zaps.refresh()

    # ------------------------------------------------------------------ the working part

    async def set_up_working(
        self,
        concurrency: int,
        live_idle: float,
        retention: timedelta | None,
        metrics_port: int | None,
    ) -> None:
        hand_over_in_bunches()  # events and log records to Prefect's senders (prefect_bridge)
        # The dispatcher's own inbox runs its transactions on a thread of their own, so they
        # never hold the write lock while this loop runs zaps (see flows.intake.threaded).
        self.claims = cast(Inbox, await ThreadedInbox.open(self.inbox_url))
        # App accounts' API rate limits are counted in the inbox, across every serve sharing it.
        use_shared_store(self.claims)
        self.dispatcher = Dispatcher(
            self.claims,
            lambda: self.zaps.zaps,
            concurrency=concurrency,
            live_idle=live_idle,
            zap_folder=Path(self.folder),
            worker=self.identity,
            role=self.role,
        )
        # Each zap's poller runs on one worker of all those sharing the inbox (a lease).
        self.pollers = Pollers(
            self.inbox, report=self.report, on_new=self.dispatcher.wake.set, holder=self.identity
        )
        self.pollers.update(self.zaps.zaps)
        self.retention = retention
        self.ops_port = self.port if self.role == "worker" else metrics_port
        self.dispatching = asyncio.create_task(self._keep_dispatching())

    async def _keep_dispatching(self) -> None:
        assert self.dispatcher is not None
        while True:  # a dispatcher that crashes is reported and started again
            try:
                await self.dispatcher.run()
                return
            except Exception as exc:
                self.report(f"dispatcher failed ({type(exc).__name__}: {exc}); restarting it")
                await asyncio.sleep(1.0)

    async def _keep_listening(self) -> None:
        """On PostgreSQL: hear of events any receiver commits, and claim them at once."""
        assert self.dispatcher is not None
        while True:
            try:
                listening = await self.inbox.listen(self.dispatcher.wake.set)
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
            self.dispatcher.wake.set()  # what was committed meanwhile
            await asyncio.sleep(1.0)

    async def _purge_old(self) -> None:
        """Forget events (and their runs in the ledger) processed longer ago than `retention`."""
        while self.retention is not None:
            try:
                purged = await self.inbox.purge(self.retention)
                await unrecognised.purge(self.inbox, self.retention)
                if purged:
                    self.report(f"purged {purged} events processed more than {self.retention} ago")
            except Exception as exc:  # the next round tries again
                self.report(f"purging old events failed: {exc}")
            await asyncio.sleep(PURGE_EVERY)

    def _start_ops(self) -> None:
        """Health and metrics on ``ops_port`` (a worker's port, or serve's --metrics-port)."""
        assert self.dispatcher is not None and self.ops_port is not None
        self.ops = Server(
            uvicorn.Config(
                ops_app(self.inbox, self.dispatcher, self.role),
                host=self.host,
                port=self.ops_port,
                log_level="warning",
                lifespan="off",
            )
        )
        self.ops_task = asyncio.create_task(self.ops.serve())
        self.report(f"health and metrics: http://{self.local}:{self.ops_port}/readyz, /metrics")

    # ---------------------------------------------------------------- the receiving part

    async def set_up_receiving(self, max_body: int | None) -> None:
        args = ["--host", self.host, "--port", str(self.port)]
        if self.dispatcher is not None:  # the receiver nudges this process's dispatcher
            dispatcher = self.dispatcher
            self.wake, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: _Wake(dispatcher.nudged), local_addr=("127.0.0.1", 0)
            )
            args += ["--wake", str(self.wake.get_extra_info("sockname")[1])]
        args += ["--inbox", self.inbox_url] if self.inbox_url else []
        args += ["--max-body", str(max_body)] if max_body else []
        self.hooks = await build_hooks(self.inbox, self.zaps.zaps, self.report)
        self.receiver = ReceiverProcess(
            args, f"http://{self.local}:{self.port}/healthz", self.hooks
        )

    async def _keep_receiving(self) -> None:
        receiver = self.receiver
        assert receiver is not None
        while not self.stopping.is_set():  # a receiver that dies is reported and started again
            assert receiver.proc is not None
            code = await receiver.proc.wait()
            if self.stopping.is_set():
                return
            self.report(f"the receiver exited (code {code}); restarting it")
            try:
                await receiver.start()
            except ZapError as exc:
                self.report(f"{exc}; trying again")
                await asyncio.sleep(1.0)

    async def _beat_as_receiver(self) -> None:
        """A receiver-only process is listed by ``zapflow status`` (a worker's heartbeat is its
        dispatcher's)."""
        while True:
            with contextlib.suppress(Exception):
                await self.inbox.heartbeat(self.identity, HOST, role=self.role)
            await asyncio.sleep(HEARTBEAT_EVERY)

    def _show_hooks(self) -> None:
        self.report("hooks:\n" + "\n".join(hook_urls(self.public, self.hooks)))
        if self.on_hooks is not None:
            self.on_hooks(self.hooks)

    # ------------------------------------------------------------------------ both parts

    async def _follow_folder(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                if self.zaps.refresh():
                    if self.pollers is not None:
                        self.pollers.update(self.zaps.zaps)
                    if self.receiver is not None:
                        self.hooks = await build_hooks(self.inbox, self.zaps.zaps, self.report)
                        await self.receiver.update(self.hooks)
                        self._show_hooks()
            except Exception as exc:  # keep serving what was loaded
                self.report(f"reloading {self.folder} failed: {exc}")

    async def _tell_running(self) -> None:
        """Every STATUS_EVERY seconds: is Prefect's server there, and are runs draining? The
        receiver answers ``/readyz/running`` from it; when Prefect answers again after being
        away, the events waiting for it run at once."""
        from prefect.client.orchestration import get_client

        dispatcher, receiver = self.dispatcher, self.receiver
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
                        self.report("Prefect's server answers again; the events waiting run now")
                        dispatcher.prefect_back()
                    down_since = None
                    ok, reason = dispatcher.health()
                else:
                    if down_since is None:
                        down_since = datetime.now().astimezone()
                        self.report(
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

    async def _keep_telling(self) -> None:
        while True:  # a probe that breaks is reported and started again
            try:
                await self._tell_running()
            except Exception as exc:
                self.report(f"watching Prefect's server failed ({type(exc).__name__}: {exc})")
                await asyncio.sleep(STATUS_EVERY)

    def _on_signals(self, stop: StopHandle | None) -> None:
        loop = asyncio.get_running_loop()
        if stop is not None:
            stop.attach(loop, self.stopping.set)
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.stopping.set)

    async def run(self, started: asyncio.Event | None) -> None:
        """Start what was set up, announce it, and wait for the stop."""
        receiver, dispatcher = self.receiver, self.dispatcher
        if receiver is not None:
            await receiver.start()
        if dispatcher is not None:
            # Acknowledging comes first: under a burst the runs wait in the inbox, not the
            # senders. (Linux nice values are per thread: this lowers the thread running zaps.)
            with contextlib.suppress(OSError):
                os.nice(RUNS_NICENESS)
        doing = {"all": "receiver", "receiver": "receiver only", "worker": "worker"}[self.role]
        where = f" (inbox {self.inbox.describe()})" if receiver is None else f" on {self.public}"
        self.report(f"{doing}{where}  ·  {len(self.zaps.zaps)} zap(s) from {self.folder}/")
        if receiver is not None:
            self._show_hooks()
            kept = await unrecognised.waiting_count(self.inbox)
            if kept:
                self.report(
                    f"{kept} deliveries wait as unrecognised (their app could not read them): "
                    "zapflow events --unrecognised"
                )
        if started is not None:
            started.set()
        loops = [self._follow_folder()]
        if receiver is not None:
            loops += [self._keep_receiving(), self._keep_telling()]
        if dispatcher is not None:
            loops += [self._purge_old(), self._keep_listening()]
            if self.ops_port is not None:
                self._start_ops()
            if receiver is None:
                loops.append(self._keep_telling())
        else:
            loops.append(self._beat_as_receiver())
        self.tasks = [asyncio.create_task(loop) for loop in loops]
        await self.stopping.wait()

    async def close(self) -> None:
        """Graceful: no more deliveries are accepted; the dispatcher finishes the runs in hand;
        what is still in the inbox stays there for the next start."""
        self.stopping.set()
        if self.receiver is not None:
            await self.receiver.stop()
        if self.ops is not None and self.ops_task is not None:
            self.ops.should_exit = True
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self.ops_task, 5.0)
        for task in self.tasks:
            task.cancel()
        if self.pollers is not None:
            await self.pollers.stop()
        if self.dispatcher is not None:
            self.dispatcher.stop()
        if self.dispatching is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self.dispatching
        if self.wake is not None:
            self.wake.close()
        rendering.shutdown()
        if self.claims is not None:
            use_shared_store(None)
            await self.claims.close()
        if self.dispatcher is None:
            with contextlib.suppress(Exception):
                await self.inbox.sign_off(self.identity)
        await self.inbox.close()
        self.report("stopped; events not yet run stay in the inbox for the next start")
