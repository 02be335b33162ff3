"""The receiver in a process of its own, started and watched by `zapflow serve`.

Acknowledging a delivery is a few milliseconds of work; running zaps is most of the CPU. In one
process they would share one interpreter lock, and a burst of zap runs would hold up every
acknowledgement behind it. So `zapflow serve` runs the receiver here: it follows the zap folder
for its hooks, commits each delivery to the inbox before answering, and nudges the dispatcher
with a UDP datagram on loopback (a hint only: the dispatcher also polls the inbox). It exits
when asked (SIGTERM: stops accepting, answers the requests in flight) or when the `zapflow
serve` that started it is gone, so a killed server never leaves its port taken.

    python -c "from flows.intake.receiver_process import main; main()" ZAP_DIR \\
        --port 8787 --inbox URL --wake 41234 --parent PID
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import uvicorn

from flows.intake.hooks import ZapFolder, build_hooks
from flows.intake.inbox import Inbox
from flows.intake.receiver import create_app


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
    folder: Path,
    *,
    host: str,
    port: int,
    inbox_url: str | None,
    wake_port: int | None,
    parent: int | None,
) -> None:
    # The dispatcher's process folds the write-ahead log into the database (checkpoints), so
    # no acknowledgement waits for one.
    # `zapflow serve` opened (and migrated) the inbox before starting this process.
    inbox = await Inbox.open(inbox_url, batch_wait=0.0, checkpoints=False, migrate=False)
    zaps = ZapFolder(folder, report=lambda _text: None)  # serve reports the folder's changes
    zaps.refresh()
    state = {"hooks": await build_hooks(inbox, zaps.zaps)}
    app = create_app(inbox, lambda: state["hooks"], on_accept=Nudge(wake_port), ready=lambda: True)
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
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, server.request_exit)

    async def follow() -> None:
        while True:
            await asyncio.sleep(1.0)
            with contextlib.suppress(Exception):  # serve reports the folder's problems
                if zaps.refresh():
                    state["hooks"] = await build_hooks(inbox, zaps.zaps)

    async def watch_parent() -> None:
        while parent is not None:
            await asyncio.sleep(0.2)
            if os.getppid() != parent:  # orphaned: `zapflow serve` was killed
                server.request_exit()
                return

    tasks = [asyncio.create_task(follow()), asyncio.create_task(watch_parent())]
    try:
        await server.serve()
    finally:
        for task in tasks:
            task.cancel()
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
    parser.add_argument("folder", type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument("--inbox", default=None)
    parser.add_argument("--wake", type=int, default=None)
    parser.add_argument("--parent", type=int, default=None)
    args = parser.parse_args(argv)
    run(
        receive(
            args.folder,
            host=args.host,
            port=args.port,
            inbox_url=args.inbox,
            wake_port=args.wake,
            parent=args.parent,
        )
    )
