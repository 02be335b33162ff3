"""The receiver in a process of its own, started and watched by `zapflow serve`.

Acknowledging a delivery is a few milliseconds of work; running zaps is most of the CPU. In one
process they would share one interpreter lock, and a burst of zap runs would hold up every
acknowledgement behind it. So `zapflow serve` runs the receiver here: it reads its hook table
(``flows.intake.hooks``) from its standard input — one line of JSON, and a new line whenever
the zaps change — commits each delivery to the inbox before answering, and nudges the
dispatcher with a UDP datagram on loopback (a hint only: the dispatcher also polls the inbox).
It exits when asked (SIGTERM: stops accepting, answers the requests in flight) or when its
standard input closes — the `zapflow serve` that started it is gone — so a killed server never
leaves its port taken.

    python -c "from flows.intake.receiver_process import main; main()" \\
        --port 8787 --inbox URL --wake 41234 --max-body 1048576 < hook-table-lines
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
import time
from collections.abc import Coroutine, Iterator
from typing import Any

import orjson
import uvicorn

from flows.intake.hooks import Hooks
from flows.intake.inbox import Inbox
from flows.intake.receiver import DEFAULT_MAX_BODY, create_app

STATUS_LINE = b'{"status":'
STATUS_EVERY = 2.0
"""Seconds between two status lines from serve (whether the accepted events are being run)."""
STATUS_STALE = 10.0
"""A status older than this is no status: serve's loop is hung, or serve is gone."""


def status_line(ok: bool, reason: str) -> bytes:
    """What serve writes to the receiver's standard input to say whether runs drain."""
    return orjson.dumps({"status": {"ok": ok, "reason": reason}}) + b"\n"


class Server(uvicorn.Server):
    """uvicorn's server, minus its signal handling (which re-raises the signal after its own
    shutdown): the caller decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def request_exit(self) -> None:
        self.should_exit = True


class Nudge:
    """Tells the dispatcher, over UDP on loopback, that events arrived (never blocks)."""

    def __init__(self, port: int | None) -> None:
        self.address = ("127.0.0.1", port) if port else None
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)

    def __call__(self) -> None:
        if self.address is not None:
            with contextlib.suppress(OSError):  # a full buffer: the dispatcher is awake anyway
                self.sock.sendto(b"!", self.address)


async def receive(
    *,
    host: str,
    port: int,
    inbox_url: str | None,
    wake_port: int | None,
    max_body: int = DEFAULT_MAX_BODY,
) -> None:
    loop = asyncio.get_running_loop()
    table = asyncio.StreamReader(limit=64 * 1024 * 1024, loop=loop)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(table), sys.stdin)
    first = await table.readline()
    if not first:
        return  # serve was gone before it sent the hooks
    state: dict[str, Any] = {
        "hooks": Hooks.from_line(first),
        "running": (False, "zapflow serve has not yet said whether runs drain", time.monotonic()),
    }

    def running() -> tuple[bool, str]:
        ok, reason, at = state["running"]
        silent = time.monotonic() - at
        if silent > STATUS_STALE:
            return False, f"no word from zapflow serve for {silent:.0f} s: is it hung?"
        return ok, reason

    # The dispatcher's process folds the write-ahead log into the database (checkpoints), so
    # no acknowledgement waits for one.
    # `zapflow serve` opened (and migrated) the inbox before starting this process.
    inbox = await Inbox.open(inbox_url, batch_wait=0.0, checkpoints=False, migrate=False)
    app = create_app(
        inbox,
        lambda: state["hooks"],
        max_body=max_body,
        on_accept=Nudge(wake_port),
        running=running,
    )
    server = Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=10,
        )
    )
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, server.request_exit)

    async def follow() -> None:
        """New hook tables and run status lines as serve sends them; the end of input means
        serve is gone."""
        while line := await table.readline():
            try:
                if line.startswith(STATUS_LINE):
                    status = orjson.loads(line)["status"]
                    state["running"] = (bool(status["ok"]), str(status["reason"]), time.monotonic())
                    continue
                state["hooks"] = Hooks.from_line(line)
            except (ValueError, TypeError, KeyError) as exc:  # keeps answering the last good one
                print(f"zapflow receiver: a hook table it could not read: {exc}", file=sys.stderr)
        server.request_exit()

    following = asyncio.create_task(follow())
    try:
        await server.serve()
    finally:
        following.cancel()
        await inbox.close()


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run the receiver on uvloop where it is installed (not on Windows): with it and uvicorn's
    httptools parser (picked by uvicorn when installed) a request costs the receiver less CPU
    than on asyncio's own loop and the pure-Python h11 parser."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument("--inbox", default=None)
    parser.add_argument("--wake", type=int, default=None)
    parser.add_argument("--max-body", type=int, default=DEFAULT_MAX_BODY)
    args = parser.parse_args(argv)
    run(
        receive(
            host=args.host,
            port=args.port,
            inbox_url=args.inbox,
            wake_port=args.wake,
            max_body=args.max_body,
        )
    )
