"""Processes: a process tree's memory and CPU time from /proc, the machine's quiet, a
throwaway Prefect server, free ports and waiting."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


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


def _bench_cpu_seconds(sink_pid: int) -> float:
    """This process, its finished sender processes and the sink (process ``sink_pid``)."""
    ticks = _cpu_ticks(os.getpid(), reaped=True) + _cpu_ticks(sink_pid)
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

    python: str | None = None
    """Another Python to run the server with (one with prefect and prefect-redis installed:
    ``bench_topology.py --prefect-python``); None: zapflow's own way, on this Python."""

    def __init__(self, prefix: str) -> None:
        from flows import server

        self.home = Path(tempfile.mkdtemp(prefix=prefix))
        self.env = {"ZAPFLOW_HOME": str(self.home), "PREFECT_SERVER_UI_ENABLED": "false"}
        with environment(**self.env):
            self.api_url = server.start(free_port(), announce=False, python=self.python)
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
