"""One host against the several-machines topology, on the same bursts, in one run.

    .venv/bin/python bench/bench_topology.py --redis redis://127.0.0.1:6379 \\
        --postgres postgresql+asyncpg://postgres@127.0.0.1:5432/test [--events 2000] [--senders 50]
        [--rounds 3] [--prefect-python PY] [--prefect-env NAME=VALUE ...]
        [--worker-concurrency N]

Three configurations, started once and kept running side by side:

1. one host: ``zapflow serve`` (``--role all``) with its own Prefect server (SQLite), as
   bench_compare runs it;
2. zapflow split, Prefect not: two receivers and two workers on a PostgreSQL inbox, all sending
   their history to one Prefect server (SQLite) — what zapflow's own split costs;
3. the topology (``topology.py``): Prefect's API twice on PostgreSQL with Redis messaging and its
   services apart, two receivers and two workers on a PostgreSQL inbox (each worker on its own
   API replica), the senders split between the receivers. ``--prefect-env`` sets a Prefect
   setting on its API replicas and services (to try one).

Each round sends each configuration a burst in turn, the order reversed every round: this
machine's speed drifts by tens of per cent within minutes (the same process measured 6.1 to 9.6
ms per run in consecutive bursts), so what compares is a round's bursts, a minute apart, and the
median of the rounds' ratios.

``--prefect-python`` runs every Prefect server process of the three on another Python (a venv
with ``prefect==3.9.1 prefect-redis==0.3.0``): Prefect's timestamps are pendulum objects below
Python 3.13 and plain datetimes from it. zapflow's own processes stay on this Python.

The zap is bench_compare's (catch hook → one HTTP POST to the sink). For each burst: zap runs/s
(first send → last action), event → action p50/p99 (sink arrival − sent), and CPU seconds per
zap run by process kind, counted from the first send until every process is quiet again
(Prefect records the last runs after their actions). What the processes spend with nothing to
do (measured for ten seconds before each burst: their loops, leases, heartbeats, Prefect's
services) is a cost per second, not per run; it is printed apart and taken out of the "idle
apart" figure, and both figures are compared. Then the events Prefect recorded per run, by
name (a step that outlasts RUNNING_AFTER records Running too; Prefect's cost goes by events),
and the transactions per run of each database on the PostgreSQL server (the inbox's claims
and group commits). On one machine the processes share its cores, so
what compares is CPU per run: what the topology's coordination (PostgreSQL's inbox, Redis, two
API replicas) costs over one host, per run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
from harness import Sink, ThrowawayPrefect, missed_enquiry, send_events
from procs import _cpu_ticks, _tree, free_port
from topology import PrefectAtScale, fresh_databases, transactions
from zapflow_system import ZAP, start_zapflow

TICK = os.sysconf("SC_CLK_TCK")
IDLE_SECONDS = 10


def _by_name(name: str) -> list[int]:
    """Pids of the processes whose command is ``name`` (PostgreSQL's backends, Redis)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/comm"):
        try:
            if stat.read_text().strip().startswith(name):
                found.append(int(stat.parent.name))
        except OSError:
            pass
    return found


def _environ(pid: int) -> dict[str, str]:
    """A process's environment (one host's serve: the Prefect API it records to)."""
    pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(p.decode().split("=", 1) for p in pairs if b"=" in p)


def _ticks(pids: set[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):  # gone meanwhile
            total += _cpu_ticks(pid)
    return total


def _settle(trees: dict[str, set[int]], quiet: float = 0.15, limit: float = 120) -> None:
    """Wait until the processes are quiet again: Prefect records the last runs' events after
    their actions, so the CPU they cost is counted only once they fall below ``quiet`` cores
    for six seconds running (longer than their services' flush interval)."""
    pids = set().union(*trees.values())
    last, calm, deadline = _ticks(pids), 0, time.time() + limit
    while calm < 6 and time.time() < deadline:
        time.sleep(1)
        now = _ticks(pids)
        calm = calm + 1 if (now - last) / TICK < quiet else 0
        last = now


def _prefect_events(api: str, since: datetime.datetime) -> dict[str, int]:
    """Events Prefect recorded since ``since``, by event name (its own count-by endpoint)."""
    reply = httpx.post(
        f"{api}/events/count-by/event",
        json={"filter": {"occurred": {"since": since.isoformat()}}},
        timeout=60,
    )
    reply.raise_for_status()
    return {row["value"]: row["count"] for row in reply.json()}


def _burst(
    args: argparse.Namespace, sink: Sink, urls: list[str], api: str, kinds: dict[str, Pids]
) -> tuple[float, float]:
    """Send the burst (split between ``urls``), wait for every action, print the figures;
    returns CPU ms per run of every process, idle apart and all of it."""
    events, senders = args.events, args.senders
    prefix = f"b{uuid.uuid4().hex[:6]}-"
    warm = [threading.Thread(target=send_events, args=(u, 5, 1, missed_enquiry)) for u in urls]
    for thread in warm:
        thread.start()
    for thread in warm:
        thread.join()
    time.sleep(3)
    trees = {kind: _tree(pids() if callable(pids) else pids) for kind, pids in kinds.items()}
    # What the processes spend with nothing to do (their loops, leases, heartbeats, Prefect's
    # services) is a cost per second, not per run: measured first, so that the burst's figure
    # can be split into that and what each run adds.
    idle_from = {kind: _ticks(pids) for kind, pids in trees.items()}
    time.sleep(IDLE_SECONDS)
    idle = {
        kind: (_ticks(pids) - idle_from[kind]) / TICK / IDLE_SECONDS for kind, pids in trees.items()
    }
    before = {kind: _ticks(pids) for kind, pids in trees.items()}
    sends: list = []
    share = events // len(urls)

    def send(url: str, k: int) -> None:
        sends.extend(
            send_events(url, share, senders // len(urls), missed_enquiry, prefix=f"{prefix}{k}-")
        )

    start = time.time()
    since = datetime.datetime.now(datetime.UTC)
    xacts = transactions(args.postgres)
    threads = [threading.Thread(target=send, args=(u, k)) for k, u in enumerate(urls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = share * len(urls)
    while sink.count(prefix) < total and time.time() - start < 600:
        time.sleep(0.2)
    done = sink.count(prefix)
    arrivals = {event_id: at for event_id, at in sink.records(prefix)}
    last = max(arrivals.values(), default=start)
    sent = {s.id: s.sent for s in sends if s.accepted}
    latency = sorted(1000 * (arrivals[i] - sent[i]) for i in arrivals if i in sent)
    p99 = latency[min(len(latency) - 1, int(len(latency) * 0.99))] if latency else 0.0
    print(
        f"  {done} of {total} actions, {done / max(0.001, last - start):.1f} zap runs/s; "
        f"event → action p50 {statistics.median(latency) if latency else 0:.0f} ms, "
        f"p99 {p99:.0f} ms"
    )
    _settle(trees)
    span = time.time() - start
    all_cpu = all_idle = 0.0
    runs = max(done, 1)
    print(f"    {'':<22} {'CPU':>8}  {'per run':>9}  {'idle':>10}  {'per run, idle apart':>19}")
    for kind, pids in trees.items():
        seconds = (_ticks(pids) - before[kind]) / TICK
        all_cpu += seconds
        all_idle += idle[kind]
        print(
            f"    {kind:<22} {seconds:6.1f} s  {1000 * seconds / runs:6.2f} ms  "
            f"{idle[kind]:5.3f} core  {1000 * (seconds - idle[kind] * span) / runs:16.2f} ms"
        )
    print(
        f"    {'all':<22} {all_cpu:6.1f} s  {1000 * all_cpu / runs:6.2f} ms  "
        f"{all_idle:5.3f} core  {1000 * (all_cpu - all_idle * span) / runs:16.2f} ms"
        f"   ({span:.0f} s from first send to quiet)"
    )
    # a transaction is a round trip or more, and PostgreSQL's work
    after = transactions(args.postgres)
    busy = {
        name: (after[name] - xacts.get(name, 0)) / runs
        for name in after
        if name.startswith(("zapflow_bench", "prefect_bench"))
    }
    print(
        "    PostgreSQL transactions per run: "
        + ", ".join(f"{name} {count:.2f}" for name, count in busy.items() if count >= 0.05)
    )
    # Prefect's cost goes by the events it records: a step that outlasts RUNNING_AFTER records
    # a Running state before its final one.
    recorded = _prefect_events(api, since)
    print(
        f"    Prefect events per run: {sum(recorded.values()) / runs:.2f} ("
        + ", ".join(
            f"{name.removeprefix('prefect.')} {count / runs:.2f}"
            for name, count in sorted(recorded.items(), key=lambda item: -item[1])
            if count / runs >= 0.005
        )
        + ")"
    )
    return 1000 * (all_cpu - all_idle * span) / runs, 1000 * all_cpu / runs


def _serve(
    folder: Path, home: Path, role: str, inbox: str, env: dict[str, str], *options: str
) -> tuple:
    port = free_port()
    log = (home / f"{role}-{port}.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from flows.cli import main; main()", "serve", str(folder)]
        + ["--role", role, "--inbox", inbox, "--port", str(port), *options],
        env={**os.environ, **env, "ZAPFLOW_HOME": str(home / f"{role}-{port}"), "COLUMNS": "300"},
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    return proc, port, log


def _hook(log_path: Path, deadline: float) -> str:
    import re

    while time.time() < deadline:
        found = re.search(r"catch hook of bench-missed-enquiry: (\S+)", log_path.read_text())
        if found:
            return found.group(1)
        time.sleep(0.3)
    raise RuntimeError(log_path.read_text()[-2000:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--postgres", required=True, help="a PostgreSQL URL (databases are made)")
    parser.add_argument("--redis", required=True, help="a Redis URL")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--senders", type=int, default=50)
    parser.add_argument(
        "--prefect-env", action="append", default=[], help="NAME=VALUE for the topology's Prefect"
    )
    parser.add_argument(
        "--prefect-python",
        help="run every Prefect server process on this Python (with prefect and prefect-redis)",
    )
    parser.add_argument(
        "--worker-concurrency",
        type=int,
        help="each worker's --concurrency (serve's default: 50, as one host's)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="bursts per configuration, in alternating order"
    )
    args = parser.parse_args()
    ThrowawayPrefect.python = args.prefect_python
    sink = Sink()
    figures: dict[str, list[tuple[float, float]]] = {}
    try:
        with contextlib.ExitStack() as running:
            # All three run from the start, side by side, and take the burst in turn (the order
            # reversed every round): this machine's speed drifts by tens of per cent from one
            # minute to the next, so what compares is one round's bursts, a minute apart.
            configurations = [
                running.enter_context(start(args, sink)) for start in (_one_host, _split, _topology)
            ]
            for round_ in range(1, args.rounds + 1):
                print(f"--- round {round_} of {args.rounds}")
                order = configurations if round_ % 2 else configurations[::-1]
                for name, title, urls, api, kinds in order:
                    print(f"{title}: {args.events} events")
                    figure = _burst(args, sink, urls, api, kinds)
                    figures.setdefault(name, []).append(figure)
    finally:
        sink.stop()
    print("CPU per zap run, all processes, idle apart (least / median of the rounds):")
    for name, pairs in figures.items():
        values = [apart for apart, _ in pairs]
        print(f"  {name:<14} {min(values):6.2f} / {statistics.median(values):6.2f} ms")
    for label, index in (("idle apart", 0), ("all of it", 1)):
        ratios = [
            t[index] / o[index] - 1
            for t, o in zip(figures["topology"], figures["one host"], strict=True)
        ]
        print(
            f"  topology against one host, {label}: median {100 * statistics.median(ratios):+.0f} %"
            ", per round: " + ", ".join(f"{100 * r:+.0f} %" for r in ratios)
        )


Pids = list[int] | Callable[[], list[int]]
"""A process kind's pids, or how to find them when a burst starts (PostgreSQL's backends)."""
Started = Iterator[tuple[str, str, list[str], str, dict[str, Pids]]]
"""A configuration once it serves the hook: its name, title, hook URLs, Prefect's API URL and
process kinds."""


@contextlib.contextmanager
def _one_host(args: argparse.Namespace, sink: Sink) -> Started:
    url, _, pids, stop = start_zapflow(sink.url)
    try:
        yield (
            "one host",
            "one host (serve --role all, its own Prefect server)",
            [url],
            _environ(pids[0])["PREFECT_API_URL"],
            {"serve + receiver": pids[:1], "Prefect server": pids[1:]},
        )
    finally:
        stop()


def _stop(started: list) -> None:
    for proc, _, _log in started:
        proc.terminate()
    for proc, _, log in started:
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _concurrency(args: argparse.Namespace) -> list[str]:
    return ["--concurrency", str(args.worker_concurrency)] if args.worker_concurrency else []


def _kinds(receivers: list, workers: list, prefect: dict[str, Pids]) -> dict[str, Pids]:
    return {
        "receivers": [p.pid for p, _, _ in receivers],
        "workers": [p.pid for p, _, _ in workers],
        **prefect,
        # every configuration's PostgreSQL backends: the others' are idle meanwhile (and idle
        # is measured apart)
        "PostgreSQL": lambda: _by_name("postgres"),
    }


def _hooks(receivers: list) -> list[str]:
    hooks = [_hook(Path(log.name), time.time() + 120) for _, _, log in receivers]
    time.sleep(5)  # the workers' start
    return hooks


@contextlib.contextmanager
def _split(args: argparse.Namespace, sink: Sink) -> Started:
    with fresh_databases(args.postgres, "zapflow_bench") as (inbox,):
        prefect = ThrowawayPrefect("zapflow-bench-split-")
        folder = prefect.home / "zaps"
        folder.mkdir()
        (folder / "bench.yaml").write_text(ZAP.format(sink=sink.url, before=""))
        env = {"PREFECT_API_URL": prefect.api_url}
        receivers = [_serve(folder, prefect.home, "receiver", inbox, env) for _ in range(2)]
        workers = [
            _serve(folder, prefect.home, "worker", inbox, env, *_concurrency(args))
            for _ in range(2)
        ]
        try:
            yield (
                "zapflow split",
                "zapflow split, Prefect not (receivers x2, workers x2, PostgreSQL inbox; one "
                "Prefect server on SQLite)",
                _hooks(receivers),
                prefect.api_url,
                _kinds(
                    receivers, workers, {"Prefect server": [pid for pid in [prefect.pid] if pid]}
                ),
            )
        finally:
            _stop(receivers + workers)
            prefect.stop()


@contextlib.contextmanager
def _topology(args: argparse.Namespace, sink: Sink) -> Started:
    with fresh_databases(args.postgres, "zapflow_bench", "prefect_bench") as (inbox, prefect_db):
        home = Path(tempfile.mkdtemp(prefix="zapflow-bench-topology-"))
        folder = home / "zaps"
        folder.mkdir()
        (folder / "bench.yaml").write_text(ZAP.format(sink=sink.url, before=""))
        prefect = PrefectAtScale(
            prefect_db, args.redis, home / "prefect", args.prefect_python or sys.executable
        )
        prefect.env.update(dict(item.split("=", 1) for item in args.prefect_env))
        started: list = []
        try:
            prefect.start()
            receivers = [_serve(folder, home, "receiver", inbox, {}) for _ in range(2)]
            workers = [
                _serve(folder, home, "worker", inbox, {"PREFECT_API_URL": api}, *_concurrency(args))
                for api in prefect.apis
            ]
            started = receivers + workers
            prefect_kinds: dict[str, Pids] = {
                "Prefect API x2": prefect.api_pids,
                "Prefect services": [prefect.services_pid],
                "Redis": lambda: _by_name("redis-server"),
            }
            yield (
                "topology",
                "topology (Prefect API x2 on PostgreSQL + Redis + services, receivers x2, "
                "workers x2, PostgreSQL inbox)",
                _hooks(receivers),
                prefect.apis[0],  # the replicas share one database
                _kinds(receivers, workers, prefect_kinds),
            )
        finally:
            _stop(started)
            prefect.stop()


if __name__ == "__main__":
    main()
