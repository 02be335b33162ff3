"""Shared parts of the benchmarks: a sink, a load generator, one measured phase, and the table.

- ``Sink``: an HTTP server on loopback, in its own process, standing in for the app a zap's
  action calls (an SMS gateway, say). It records each POST's JSON ``id`` and arrival time
  (``time.time()``) and counts ids that arrive more than once.
- ``send_events``: keep-alive raw-socket senders, in their own process, so that neither an HTTP
  client library nor this process's GIL is what gets measured.
- ``measure``: one phase against one system (send, wait for the actions to settle, compute the
  figures); ``print_table`` shows the phases one row each.
- ``memory_of`` / ``cpu_seconds_of``: a process tree's resident memory and CPU time, from /proc
  (psutil is not a dependency of the project); each phase also reports the CPU that processes
  outside the benchmark took meanwhile (on a shared machine they disturb every figure), and
  ``wait_for_quiet`` waits for them to go quiet.

A body factory is a module-level function ``make_body(n, event_id, sent) -> dict``: ``n`` is the
event's number in its phase (the same numbers give every system the same events), ``event_id`` and
``sent`` (wall time at send) must travel in the event so that the action can carry them to the
sink as ``id`` and ``sent``. It is called in the sender process, just before each send.

The helper processes are this file run as a script:

    python bench/harness.py sink --port 9100
    python bench/harness.py send --url URL --events N --senders S --body module:function ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

HERE = Path(__file__).resolve().parent

MakeBody = Callable[[int, str, float], dict[str, Any]]


# --------------------------------------------------------------------------- HTTP/1.1 framing


async def _read_message(
    reader: asyncio.StreamReader, *, response: bool
) -> tuple[str, dict[str, str], bytes] | None:
    """One HTTP/1.1 message: start line, headers (lower-case names), body; None at a clean EOF.

    The body is framed by Content-Length or chunked transfer coding; a response with neither is
    read to EOF (the server closes), a request with neither has no body.
    """
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise
        return None
    start, *lines = head[:-4].decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                    pass
                break
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(chunks)
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif response and not _bodiless(start):
        body = await reader.read()
        headers["connection"] = "close"
    else:
        body = b""
    return start, headers, body


def _bodiless(status_line: str) -> bool:
    code = int(status_line.split()[1])
    return code < 200 or code in (204, 304)


def _keeps_alive(headers: dict[str, str]) -> bool:
    return headers.get("connection", "").lower() != "close"


# --------------------------------------------------------------------------- the sink


class _Records:
    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.rows: list[tuple[str, float]] = []
        self.seen: dict[str, int] = {}
        self.duplicates = 0
        self.refused = 0

    def add(self, body: bytes, arrival: float) -> bool:
        try:
            event_id = str(json.loads(body)["id"])
        except (ValueError, KeyError, TypeError):
            self.refused += 1
            return False
        self.rows.append((event_id, arrival))
        self.seen[event_id] = self.seen.get(event_id, 0) + 1
        if self.seen[event_id] == 2:
            self.duplicates += 1
        return True

    def view(self, prefix: str, rows: bool) -> dict[str, Any]:
        picked = [row for row in self.rows if row[0].startswith(prefix)]
        out: dict[str, Any] = {
            "count": len({row[0] for row in picked}),
            "arrivals": len(picked),
            "duplicates": self.duplicates,
            "refused": self.refused,
        }
        if rows:
            out["records"] = picked
        return out


async def _sink(port: int) -> None:
    records = _Records()

    async def reply(writer: asyncio.StreamWriter, status: str, payload: object) -> None:
        body = json.dumps(payload).encode()
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while message := await _read_message(reader, response=False):
                arrival = time.time()
                start, headers, body = message
                method, target, _ = start.split(" ", 2)
                path, _, query = target.partition("?")
                prefix = parse_qs(query).get("prefix", [""])[0]
                if method == "POST" and path == "/reset":
                    records.clear()
                    await reply(writer, "200 OK", {})
                elif method == "POST":
                    ok = records.add(body, arrival)
                    await reply(writer, "200 OK" if ok else "400 Bad Request", {"ok": ok})
                elif path in ("/count", "/records"):
                    await reply(writer, "200 OK", records.view(prefix, path == "/records"))
                else:
                    await reply(writer, "404 Not Found", {})
                if not _keeps_alive(headers):
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(connection, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


class Sink:
    """The sink's process: ``url`` takes the actions' POSTs (any path but /reset)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.base}/sms"
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "harness.py"), "sink", "--port", str(self.port)],
            stdin=subprocess.DEVNULL,
        )
        self.client = httpx.Client(base_url=self.base, timeout=30)
        wait_until(lambda: self._answers(), 20, "the sink did not start")

    @property
    def pid(self) -> int:
        return self.process.pid

    def _answers(self) -> bool:
        try:
            self.client.get("/count")
        except httpx.TransportError:
            return False
        return True

    def reset(self) -> None:
        self.client.post("/reset").raise_for_status()

    def count(self, prefix: str = "") -> int:
        """Distinct ids arrived (starting with ``prefix``)."""
        return int(self.client.get("/count", params={"prefix": prefix}).json()["count"])

    def records(self, prefix: str = "") -> list[tuple[str, float]]:
        """Every arrival (starting with ``prefix``), as (id, arrival time), in arrival order."""
        rows = self.client.get("/records", params={"prefix": prefix}).json()["records"]
        return [(event_id, arrival) for event_id, arrival in rows]

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(10)


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


# --------------------------------------------------------------------------- processes


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = Path(entry.path, "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _tree(pids: Sequence[int]) -> set[int]:
    children, found, todo = _children(), set(), list(pids)
    while todo:
        pid = todo.pop()
        if pid not in found and Path(f"/proc/{pid}").exists():
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def memory_of(pids: Sequence[int]) -> int:
    """Resident memory (bytes) of the processes ``pids`` and all their descendants."""
    page, total = os.sysconf("SC_PAGE_SIZE"), 0
    for pid in _tree(pids):
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
    return total


def proportional_memory_of(pids: Sequence[int]) -> int:
    """Proportional memory (PSS, bytes) of ``pids`` and their descendants: each page shared by
    several processes (Python's own, its libraries') counted once in all, not once in each as
    the resident sizes of :func:`memory_of` add up."""
    total = 0
    for pid in _tree(pids):
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
    return total


BUSY = 15.0  # % of a core used by processes outside the benchmark: more disturbs the figures


def _cpu_ticks(pid: int, reaped: bool = False) -> int:
    """utime + stime of ``pid`` (+ its reaped children's with ``reaped``), in clock ticks."""
    return stat_ticks(Path(f"/proc/{pid}/stat"), reaped)


def stat_ticks(stat: Path, reaped: bool = False) -> int:
    """utime + stime (+ cutime + cstime with ``reaped``) from a /proc ``stat`` file — a
    process's, or one thread's (``/proc/PID/task/TID/stat``) — in clock ticks; 0 if gone."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return sum(int(f) for f in fields[11 : 15 if reaped else 13])
    return 0


def cpu_seconds_of(pids: Sequence[int]) -> float:
    """CPU time (user + system, seconds) used so far by ``pids`` and their live descendants."""
    return sum(_cpu_ticks(pid) for pid in _tree(pids)) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> tuple[float, float]:
    """CPU time used so far on this machine, all cores, idle and iowait excluded: (everything,
    the kernel's own part: interrupts and kernel threads, such as those writing files to disk)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    kernel = irq + softirq + sum(_cpu_ticks(pid) for pid in _tree([2]))  # 2: kthreadd
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq + steal) / tick, kernel / tick


def _bench_cpu_seconds(sink: Sink) -> float:
    """This process, its finished sender processes and the sink."""
    ticks = _cpu_ticks(os.getpid(), reaped=True) + _cpu_ticks(sink.pid)
    return ticks / os.sysconf("SC_CLK_TCK")


def wait_for_quiet(
    pids: Sequence[int], timeout: float, window: float = 3.0, say: Callable[[str], None] = print
) -> float:
    """Wait at most ``timeout`` seconds until the processes outside the benchmark (all but
    ``pids``' trees, this process and the kernel's own work) use under ``BUSY`` % of a core over
    ``window`` seconds. Returns their last reading (% of a core)."""
    deadline, told = time.monotonic() + timeout, False
    while True:
        mine = [os.getpid(), *pids]
        before = cpu_seconds_of(mine), *machine_cpu_seconds()
        time.sleep(window)
        after = cpu_seconds_of(mine), *machine_cpu_seconds()
        ours, machine, kernel = (b - a for a, b in zip(before, after, strict=True))
        percent = 100 * (machine - kernel - ours) / window
        if percent < BUSY or time.monotonic() >= deadline:
            return percent
        if not told:
            say(f"waiting for a quiet machine: other processes use {percent:.0f} % of a core …")
            told = True


class _PeakMemory:
    """Samples the memory of ``pids`` every ``every`` seconds in a thread; ``peak`` and
    ``peak_pss`` are the highest resident and proportional sizes."""

    def __init__(self, pids: Sequence[int], every: float = 0.5) -> None:
        self.pids, self.every, self.peak, self.peak_pss = list(pids), every, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, memory_of(self.pids))
            self.peak_pss = max(self.peak_pss, proportional_memory_of(self.pids))
            if self._stop.wait(self.every):
                return

    def __enter__(self) -> _PeakMemory:
        if self.pids:
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self.pids:
            self._thread.join()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], seconds: float, failure: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{failure} within {seconds:.0f} s")
        time.sleep(0.2)


class ThrowawayPrefect:
    """A Prefect server for one system under test: started like zapflow's own (SQLite, the
    task-run recorder batched), UI off, under a temporary state folder removed by ``stop``."""

    def __init__(self, prefix: str) -> None:
        from flows import server

        self.home = Path(tempfile.mkdtemp(prefix=prefix))
        self.env = {"ZAPFLOW_HOME": str(self.home), "PREFECT_SERVER_UI_ENABLED": "false"}
        with environment(**self.env):
            self.api_url = server.start(free_port(), announce=False)
            self.pid = server.running_pid()

    def stop(self, *processes: subprocess.Popen[Any], grace: float = 5.0) -> None:
        """Stop ``processes`` (SIGTERM, then SIGKILL after ``grace`` s), then the server."""
        from flows import server

        for proc in processes:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(grace)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if self.pid:
            # server.stop() waits until the pid is gone; this process is its parent: reap it.
            threading.Thread(target=_reap, args=(self.pid,), daemon=True).start()
        with environment(**self.env):
            server.stop()
        if os.environ.get("BENCH_KEEP"):  # to look into the state (inbox, logs) afterwards
            print(f"state kept in {self.home}", file=sys.stderr)
        else:
            shutil.rmtree(self.home, ignore_errors=True)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """Set environment variables for the block (child processes started in it inherit them)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --------------------------------------------------------------------------- one phase


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


@dataclass
class Phase:
    """What one phase measured. Rates are per second, latencies in seconds."""

    system: str
    phase: str
    events: int
    senders: int
    cap: float | None
    sent: int = 0
    accepted: int = 0
    refused: int = 0  # answered with a non-2xx status
    broken: int = 0  # connection broke before an answer
    unanswered: int = 0  # no answer before the cap
    accepted_per_s: float = float("nan")
    ack_p50: float = float("nan")
    ack_p99: float = float("nan")
    arrived: int = 0  # distinct events whose action reached the sink within the cap
    late: int = 0  # ... after the cap, while waiting for the actions to settle
    action_p50: float = float("nan")
    action_p99: float = float("nan")
    processed_per_s: float = float("nan")
    lost: int = 0  # accepted, yet no action at the sink when the arrivals stopped
    doubled: int = 0  # events whose action arrived more than once
    not_processed: int = 0  # events without an action within the cap (never sent included)
    capped: bool = False  # the cap ended the phase before every event was sent and answered
    settled: bool = True  # False: the wait for stragglers was cut while actions still came
    seconds: float = 0.0  # the phase's wall time: first send to the end of the wait
    memory_idle: int = 0  # resident (RSS), bytes
    memory_peak: int = 0
    pss_idle: int = 0  # proportional (PSS), bytes
    pss_peak: int = 0
    cpu_percent: float = float("nan")  # of one core, the system's processes during the phase
    kernel_percent: float = float("nan")  # of one core: interrupts and kernel threads (disk I/O)
    others_percent: float = float("nan")  # of one core: other processes (not senders, sink)
    notes: list[str] = field(default_factory=list)


_phases = itertools.count(1)


def measure(
    system_name: str,
    url: str,
    make_body: MakeBody,
    sink: Sink,
    events: int,
    senders: int,
    *,
    phase: str = "burst",
    cap: float | None = None,
    settle: float = 10.0,
    drain: float = 120.0,
    pids: Sequence[int] = (),
    rate: float | None = None,
) -> Phase:
    """Send ``events`` from ``senders`` and measure them through to the sink's arrivals.

    - accepted/s: accepted events / (last ack - first send); ack p50/p99 over accepted events;
    - event → action: sink arrival (the first, if doubled) - the event's ``sent``, p50/p99;
    - processed/s: actions arrived within the cap / (last such arrival - first send);
    - after the sends, waits until every accepted event's action has arrived, or the arrivals
      have not grown for ``settle`` seconds (the missing ones are lost), or ``drain`` seconds
      after the cap (or after the last send without a cap) have passed (``settled`` False);
    - with a ``cap`` (seconds from the first send), no event is sent after it, answers still
      awaited then are given up, and actions arriving after it count as late, not processed.
    """
    # A fresh prefix per phase: actions still coming from an earlier phase are not counted here.
    prefix = f"{system_name}-{phase}-{next(_phases)}-"
    sink.reset()
    result = Phase(system_name, phase, events, senders, cap)
    result.memory_idle = memory_of(pids)
    result.pss_idle = proportional_memory_of(pids)
    cpu_before = cpu_seconds_of(pids), _bench_cpu_seconds(sink), *machine_cpu_seconds()
    start = time.time()
    deadline = start + cap if cap else None
    with _PeakMemory(pids) as peak:
        sends = send_events(
            url, events, senders, make_body, prefix=prefix, deadline=deadline, rate=rate
        )
        expected = {s.id for s in sends if s.accepted}
        result.settled = _settle(sink, prefix, expected, settle, (deadline or time.time()) + drain)
        result.seconds = time.time() - start
        cpu_after = cpu_seconds_of(pids), _bench_cpu_seconds(sink), *machine_cpu_seconds()
    system, bench, machine, kernel = (b - a for a, b in zip(cpu_before, cpu_after, strict=True))
    result.cpu_percent = 100 * system / result.seconds
    result.kernel_percent = 100 * kernel / result.seconds
    result.others_percent = 100 * (machine - kernel - system - bench) / result.seconds
    result.memory_peak, result.pss_peak = peak.peak, peak.peak_pss
    _figures(result, sends, sink.records(prefix), deadline)
    return result


def _settle(sink: Sink, prefix: str, expected: set[str], quiet: float, until: float) -> bool:
    last, grew = -1, time.time()
    while time.time() < until:
        arrived = {event_id for event_id, _ in sink.records(prefix)}
        if expected <= arrived:
            return True
        if len(arrived) > last:
            last, grew = len(arrived), time.time()
        elif time.time() - grew >= quiet:
            return True
        time.sleep(0.25)
    return False


def _figures(
    result: Phase, sends: list[Send], arrivals: list[tuple[str, float]], deadline: float | None
) -> None:
    if not sends:
        result.not_processed = result.events
        return
    first_send = min(s.sent for s in sends)
    accepted = [s for s in sends if s.accepted]
    result.sent = len(sends)
    result.accepted = len(accepted)
    result.refused = sum(1 for s in sends if s.status > 0 and not s.accepted)
    result.broken = sum(1 for s in sends if s.status == 0)
    result.unanswered = sum(1 for s in sends if s.status == -1)
    if accepted:
        result.accepted_per_s = len(accepted) / (max(s.ack for s in accepted) - first_send)
        result.ack_p50 = pct([s.latency for s in accepted], 0.5)
        result.ack_p99 = pct([s.latency for s in accepted], 0.99)

    first: dict[str, float] = {}
    times: dict[str, int] = {}
    for event_id, arrival in arrivals:
        first.setdefault(event_id, arrival)
        times[event_id] = times.get(event_id, 0) + 1
    sent_at = {s.id: s.sent for s in sends}
    in_cap = [t for event_id, t in first.items() if deadline is None or t <= deadline]
    result.arrived = len(in_cap)
    result.late = len(first) - len(in_cap)
    if in_cap:
        result.processed_per_s = len(in_cap) / (max(in_cap) - first_send)
    delays = [first[event_id] - sent for event_id, sent in sent_at.items() if event_id in first]
    result.action_p50, result.action_p99 = pct(delays, 0.5), pct(delays, 0.99)
    result.lost = sum(1 for s in accepted if s.id not in first)
    result.doubled = sum(1 for n in times.values() if n > 1)
    result.not_processed = result.events - result.arrived
    result.capped = deadline is not None and (
        result.sent < result.events or result.unanswered > 0 or result.late > 0
    )
    if result.capped:
        result.notes.append(
            f"CAPPED at {result.cap:.0f} s: {result.arrived} of {result.events} processed within "
            f"the cap; the rest count as not processed ({result.events - result.sent} never sent, "
            f"{result.unanswered} sent but unanswered and given up, {result.late} actions late)"
        )
    if result.refused:
        statuses = sorted({s.status for s in sends if s.status > 0 and not s.accepted})
        result.notes.append(f"{result.refused} answered with status {statuses}")
    if result.broken:
        result.notes.append(f"{result.broken} connections broke before an answer")
    strays = set(first) - set(sent_at)
    if strays:
        result.notes.append(f"{len(strays)} actions for ids never sent (e.g. {min(strays)})")
    if not result.settled:
        result.notes.append("actions still arriving when the wait ended: lost is an upper bound")
    if result.others_percent > BUSY:
        result.notes.append(
            f"other processes on this machine used {result.others_percent:.0f} % of a core "
            "meanwhile: the machine was not quiet, these figures are disturbed"
        )


# --------------------------------------------------------------------------- the table


def _ms(seconds: float) -> str:
    if seconds != seconds:  # NaN
        return "–"
    if seconds < 0.01:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _percent(value: float) -> str:
    return "–" if value != value else f"{value:.0f} %"


def _rate(value: float) -> str:
    return "–" if value != value else f"{value:.1f}"


def print_table(results: Sequence[Phase], title: str = "event → action, per system") -> None:
    """One row per system per phase, then each phase's notes."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for name in (
        "system",
        "phase",
        "sent /\nacked",
        "accepted\n/s",
        "ack\np50 / p99",
        "event → action\np50 / p99",
        "processed\n/s",
        "processed\n(of events)",
        "lost /\ndoubled",
        "memory MB RSS\nidle → peak",
        "PSS MB\nidle → peak",
        "cpu\n(1 core)",
        "others'\ncpu",
        "wall",
    ):
        left = name in ("system", "phase")
        table.add_column(name, justify="left" if left else "right", no_wrap=True)
    for r in results:
        table.add_row(
            r.system,
            r.phase,
            f"{r.sent} / {r.accepted}",
            _rate(r.accepted_per_s),
            f"{_ms(r.ack_p50)} / {_ms(r.ack_p99)}",
            f"{_ms(r.action_p50)} / {_ms(r.action_p99)}",
            _rate(r.processed_per_s),
            f"{r.arrived} of {r.events}" + (" capped" if r.capped else ""),
            f"{r.lost}{'' if r.settled else '?'} / {r.doubled}",
            f"{r.memory_idle / 2**20:.0f} → {r.memory_peak / 2**20:.0f}",
            f"{r.pss_idle / 2**20:.0f} → {r.pss_peak / 2**20:.0f}",
            _percent(r.cpu_percent),
            _percent(r.others_percent),
            f"{r.seconds:.1f} s",
        )
    console = Console(width=max(Console().width, 200))  # a narrower table would cut cells
    console.print(table)
    for r in results:
        for note in r.notes:
            console.print(f"  {r.system} {r.phase}: {note}")


def summary(r: Phase) -> str:
    """One phase on one line, for progress reports while a long run goes on."""
    return (
        f"{r.accepted}/{r.sent} acked at {_rate(r.accepted_per_s)}/s, "
        f"ack {_ms(r.ack_p50)} / {_ms(r.ack_p99)}, "
        f"event → action {_ms(r.action_p50)} / {_ms(r.action_p99)}, "
        f"{r.arrived} of {r.events} processed at {_rate(r.processed_per_s)}/s"
        + (" (capped)" if r.capped else "")
        + f", lost {r.lost}, doubled {r.doubled}, others' cpu {_percent(r.others_percent)}"
    )


def as_json(results: Sequence[Phase]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]


# --------------------------------------------------------------------------- the same events


def missed_enquiry(n: int, event_id: str, sent: float) -> dict[str, Any]:
    """The event n8n's bench workflow expects (../shared/peers/n8n): a missed enquiry whose
    action is an SMS ``{recipient: phone, text: "Sorry we missed you <case>", sent, id}``."""
    return {
        "id": event_id,
        "displayCaseNumber": f"CASE-{n:05d}",
        "phone": f"+8529{n % 10_000_000:07d}",
        "sent": sent,
    }


# --------------------------------------------------------------------------- helper processes


def main() -> None:
    parser = argparse.ArgumentParser(description="the benchmark's helper processes")
    commands = parser.add_subparsers(dest="command", required=True)
    sink = commands.add_parser("sink")
    sink.add_argument("--port", type=int, required=True)
    send = commands.add_parser("send")
    send.add_argument("--url", required=True)
    send.add_argument("--events", type=int, required=True)
    send.add_argument("--senders", type=int, required=True)
    send.add_argument("--body", required=True, help="module:function")
    send.add_argument("--folder", required=True, help="where the module is imported from")
    send.add_argument("--prefix", default="e-")
    send.add_argument("--deadline", type=float)
    send.add_argument("--timeout", type=float, default=300.0)
    send.add_argument("--rate", type=float, default=None, help="events per second in all")
    args = parser.parse_args()
    if args.command == "sink":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_sink(args.port))
        return
    make_body = _load(args.body, args.folder)
    sends = asyncio.run(
        _send(
            args.url,
            args.prefix,
            args.events,
            args.senders,
            make_body,
            args.deadline,
            args.timeout,
            args.rate,
        )
    )
    json.dump([[s.id, s.sent, s.ack, s.latency, s.status] for s in sends], sys.stdout)


if __name__ == "__main__":
    main()
