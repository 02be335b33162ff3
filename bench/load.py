"""The load generator: keep-alive raw-socket senders in their own process, so that neither an
HTTP client library nor this process's GIL is what gets measured."""

from __future__ import annotations

import asyncio
import importlib
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from procs import HERE
from sink import _keeps_alive, _read_message

MakeBody = Callable[[int, str, float], dict[str, Any]]


# --------------------------------------------------------------------------- the load generator


@dataclass(frozen=True)
class Send:
    """One event as its sender saw it: wall times of send and ack; status 0 = connection broke,
    -1 = no answer before the phase's cap (or the request timeout)."""

    id: str
    sent: float
    ack: float
    latency: float
    status: int

    @property
    def accepted(self) -> bool:
        return 200 <= self.status < 300


async def _send(
    url: str,
    prefix: str,
    events: int,
    senders: int,
    make_body: MakeBody,
    deadline: float | None,
    timeout: float,
    rate: float | None = None,
) -> list[Send]:
    target = urlsplit(url)
    path = target.path + (f"?{target.query}" if target.query else "")
    host, port = target.hostname or "127.0.0.1", target.port or 80
    numbers = iter(range(events))  # shared: each sender takes the next event
    done: list[Send] = []

    began = time.perf_counter()

    async def sender() -> None:
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        for n in numbers:
            if rate:  # paced: event n leaves at n / rate seconds (all senders together)
                await asyncio.sleep(max(0.0, began + n / rate - time.perf_counter()))
            if deadline is not None and time.time() >= deadline:
                break
            event_id = f"{prefix}{n:05d}"
            sent, started = time.time(), time.perf_counter()
            body = json.dumps(make_body(n, event_id, sent)).encode()
            request = (
                f"POST {path} HTTP/1.1\r\nHost: {target.netloc}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            wait = timeout if deadline is None else min(timeout, deadline - time.time())
            try:
                message, reused = None, conn is not None
                for _ in range(2):  # a kept-alive connection the server closed while idle:
                    if conn is None:  # send again on a new one, as HTTP clients do
                        conn = await asyncio.open_connection(host, port)
                    try:
                        conn[1].write(request)
                        await conn[1].drain()
                        message = await asyncio.wait_for(
                            _read_message(conn[0], response=True), wait
                        )
                    except (ConnectionError, asyncio.IncompleteReadError):
                        message = None
                    if message is not None or not reused:
                        break
                    conn[1].close()
                    conn, reused = None, False
                if message is None:
                    raise ConnectionResetError("closed before answering")
                status = int(message[0].split()[1])
                if not _keeps_alive(message[1]):
                    conn[1].close()
                    conn = None
            except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
                status = -1 if isinstance(exc, TimeoutError) else 0
                if conn is not None:
                    conn[1].close()
                    conn = None
            latency = time.perf_counter() - started
            done.append(Send(event_id, sent, sent + latency, latency, status))
            if status == -1 and deadline is not None and time.time() >= deadline:
                break
        if conn is not None:
            conn[1].close()

    await asyncio.gather(*(sender() for _ in range(senders)))
    return done


def _reference(make_body: MakeBody) -> tuple[str, str]:
    """(folder, module:function) naming ``make_body`` so that the sender process can import it."""
    module = sys.modules[make_body.__module__]
    path = Path(module.__file__ or "").resolve()
    name = path.stem if make_body.__module__ == "__main__" else make_body.__module__
    if "<locals>" in make_body.__qualname__:
        raise ValueError("a body factory must be a module-level function")
    folder = path.parent
    for _ in name.split(".")[1:]:
        folder = folder.parent
    return str(folder), f"{name}:{make_body.__qualname__}"


def _load(reference: str, folder: str) -> MakeBody:
    sys.path.insert(0, folder)
    module, _, qualname = reference.partition(":")
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found  # type: ignore[no-any-return]


def send_events(
    url: str,
    events: int,
    senders: int,
    make_body: MakeBody,
    *,
    prefix: str = "e-",
    deadline: float | None = None,
    timeout: float = 300.0,
    rate: float | None = None,
) -> list[Send]:
    """POST ``events`` bodies to ``url`` from ``senders`` keep-alive connections, each sending its
    next event when the previous one is answered; one ``Send`` per event sent. No new event is sent
    after ``deadline`` (wall time) and answers still awaited then are given up (status -1).

    Blocks while the sender process runs; from async code, run it with ``asyncio.to_thread``.
    """
    folder, reference = _reference(make_body)
    command = [sys.executable, str(HERE / "harness.py"), "send", "--url", url]
    command += ["--events", str(events), "--senders", str(senders), "--body", reference]
    command += ["--folder", folder, "--prefix", prefix, "--timeout", str(timeout)]
    if rate:
        command += ["--rate", repr(rate)]
    if deadline is not None:
        command += ["--deadline", repr(deadline)]
    out = subprocess.run(command, stdout=subprocess.PIPE, check=True).stdout
    return [Send(*row) for row in json.loads(out)]
