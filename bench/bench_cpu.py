"""Where the CPU goes per zap run: a burst through `zapflow serve`, CPU read per process.

    .venv/bin/python bench/bench_cpu.py [--events 2000] [--senders 50]

Starts zapflow as bench_compare does (`zapflow serve` with the catch-hook → HTTP POST zap, its
own Prefect server on SQLite, a loopback sink), sends a few warm-up events, then ``--events``
from ``--senders`` concurrent senders, waits until every action has reached the sink, and
prints the zap runs per second and, per process (Prefect server, serve, receiver) and per
thread of each, the CPU seconds used and the milliseconds of CPU per event. On two cores the
sum per event bounds the rate: at 25 ms per event the two cores do at most 80 runs a second.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from harness import Sink, _cpu_ticks, _tree, send_events, stat_ticks
from zapflow_system import start_zapflow


def _threads(pid: int) -> dict[str, int]:
    """CPU ticks (user + system) of each thread of ``pid``."""
    return {task.name: stat_ticks(task / "stat") for task in Path(f"/proc/{pid}/task").glob("*")}


def _name(pid: int) -> str:
    command = Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    for marker, name in (
        ("prefect server", "Prefect server"),
        ("receiver_process", "receiver"),
        ("flows.cli", "zapflow serve"),
    ):
        if marker in command:
            return name
    return command[:40]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--senders", type=int, default=50)
    parser.add_argument("--wait", type=float, default=300.0, help="longest wait for the actions")
    args = parser.parse_args()

    sink = Sink()
    url, make_body, pids, stop = start_zapflow(sink.url)
    try:
        send_events(url, 5, 1, make_body, prefix="warm-")
        time.sleep(3)
        procs = sorted(_tree(pids))
        names = {pid: _name(pid) for pid in procs}
        before = {pid: _cpu_ticks(pid) for pid in procs}
        threads_before = {pid: _threads(pid) for pid in procs}
        start = time.time()
        send_events(url, args.events, args.senders, make_body, prefix="burst-")
        acked = time.time() - start
        while sink.count("burst-") < args.events and time.time() - start < args.wait:
            time.sleep(0.2)
        wall = time.time() - start
        done = sink.count("burst-")
        tick = os.sysconf("SC_CLK_TCK")
        print(
            f"{args.events} events from {args.senders} senders: acknowledged in {acked:.1f} s, "
            f"{done} actions in {wall:.1f} s ({done / wall:.1f} zap runs/s)"
        )
        total = 0.0
        for pid in procs:
            seconds = (_cpu_ticks(pid) - before[pid]) / tick
            total += seconds
            per_thread = _threads(pid)
            busiest = sorted(
                (
                    (ticks - threads_before[pid].get(tid, 0)) / tick
                    for tid, ticks in per_thread.items()
                ),
                reverse=True,
            )[:4]
            print(
                f"  {names[pid]:<15} {seconds:6.1f} s CPU  {1000 * seconds / done:5.1f} ms/event"
                f"   busiest threads: {', '.join(f'{s:.1f} s' for s in busiest)}"
            )
        print(f"  {'all':<15} {total:6.1f} s CPU  {1000 * total / done:5.1f} ms/event")
    finally:
        stop()
        sink.stop()


if __name__ == "__main__":
    main()
