"""Comparison benchmark: zapflow, the naive design and n8n on the same events, in one run.

    .venv/bin/python bench/bench_compare.py [--events 2000] [--senders 50] [--light 100]
        [--steady 20] [--sporadic 5] [--systems naive,n8n,zapflow] [--cap 120] [--settle 10]
        [--quiet-wait 300] [--retries 1]
        [--json results.json]

The event is a missed enquiry ``{id, displayCaseNumber, phone, sent}``; its action is one real
HTTP POST of an SMS ``{recipient, text, sent, id}`` to a loopback sink (its own process) that
records arrival times. Each system runs two phases on the same events:
- light: ``--light`` events from one sender, each sent when the previous one is answered;
- steady: ``--steady`` events/s from one sender for 10 s (paced, whatever the answers' pace);
- sporadic: ``--sporadic`` events from one sender, one every ``--sporadic-gap`` seconds (8):
  a zap that fires now and then, each event its first in a while (zapflow's live flow run has
  closed in between, after its 5 s idle);
- burst: ``--events`` events from ``--senders`` concurrent keep-alive senders.
Per phase: accepted/s and ack p50/p99; event → action p50/p99 (sink arrival - ``sent``);
processed/s (first send → last action arrival); lost (accepted, never arrived) and doubled.

``--cap`` bounds each phase (seconds from its first send): no event is sent after it and actions
arriving later are not counted, so a system too slow for the burst (the naive design on Prefect's
SQLite server does a few runs/s) shows what it did in the cap and the rest as not processed.
Systems run one after another, each stopped before the next starts, each after a few warm-up
events. Before each phase the run waits (``--quiet-wait``) until processes outside the benchmark
leave the machine quiet; the table's "others' cpu" shows how much they took during the phase,
and a phase they disturbed is run again (``--retries``); the table keeps the least disturbed.
n8n is installed on first use (../shared/peers/n8n/setup.sh, a few minutes).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from harness import (
    BUSY,
    MakeBody,
    Phase,
    Sink,
    as_json,
    measure,
    print_table,
    summary,
    wait_for_quiet,
)

Started = tuple[str, MakeBody, list[int], Callable[[], None]]


def start_zapflow(sink_url: str) -> Started:
    from zapflow_system import start_zapflow as start

    return start(sink_url)


def start_naive(sink_url: str) -> Started:
    from naive import start_naive as start  # imports Prefect: only when asked for

    return start(sink_url)


def start_n8n(sink_url: str) -> Started:
    from n8n_peer import start_n8n as start

    return start(sink_url)


SYSTEMS: dict[str, Callable[[str], Started]] = {
    "zapflow": start_zapflow,
    "naive": start_naive,
    "n8n": start_n8n,
}
WARM_UP = 5


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_system(name: str, args: argparse.Namespace, sink: Sink) -> tuple[list[Phase], str]:
    """Start one system, warm it up, run its phases, stop it; its phases and a timing line."""
    began = time.time()
    url, make_body, pids, stop = SYSTEMS[name](sink.url)
    started = time.time() - began
    say(f"{name}: started in {started:.1f} s ({url}, pids {pids})")
    cap = args.cap or None
    phases: list[Phase] = []
    waited, repeated = 0.0, 0
    try:
        measure(name, url, make_body, sink, WARM_UP, 1, phase="warmup", cap=cap, settle=5)
        plan = [("light", args.light, 1, None)]
        if args.steady:
            plan.append((f"steady {args.steady:g}/s", int(args.steady * 10), 1, args.steady))
        if args.sporadic:
            gap = args.sporadic_gap
            plan.append((f"sporadic 1/{gap:g}s", args.sporadic, 1, 1 / gap))
        plan.append(("burst", args.events, args.senders, None))
        for phase, events, senders, rate in plan:
            attempts: list[Phase] = []
            for attempt in range(1 + args.retries):
                waiting = time.time()
                others = wait_for_quiet([*pids, sink.pid], args.quiet_wait, say=say)
                waited += time.time() - waiting
                say(
                    f"{name}: {phase}, {events} events from {senders} sender(s) "
                    f"(other processes were using {others:.0f} % of a core) …"
                )
                result = measure(
                    name,
                    url,
                    make_body,
                    sink,
                    events,
                    senders,
                    phase=phase,
                    cap=cap,
                    settle=args.settle,
                    pids=pids,
                    rate=rate,
                )
                say(f"{name}: {phase} done in {result.seconds:.1f} s: {summary(result)}")
                attempts.append(result)
                if result.others_percent <= BUSY or attempt == args.retries:
                    break
                say(
                    f"{name}: other processes took {result.others_percent:.0f} % of a core "
                    "during that phase: running it again"
                )
                repeated += 1
            phases.append(min(attempts, key=lambda a: a.others_percent))  # the least disturbed
    finally:
        stopping = time.time()
        stop()
    timing = (
        f"{name}: start {started:.0f} s, "
        + ", ".join(f"{p.phase} {p.seconds:.0f} s" for p in phases)
        + f", stop {time.time() - stopping:.0f} s; waited {waited:.0f} s for a quiet machine"
        + (f", {repeated} disturbed phase(s) run again" if repeated else "")
    )
    return phases, timing


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=2000, help="burst size (default 2000)")
    parser.add_argument("--senders", type=int, default=50, help="burst senders (default 50)")
    parser.add_argument("--light", type=int, default=100, help="light-load events (default 100)")
    parser.add_argument(
        "--steady",
        type=float,
        default=20.0,
        help="also a paced phase: this many events/s from one sender for 10 s (0: none)",
    )
    parser.add_argument(
        "--sporadic",
        type=int,
        default=0,
        help="also a sporadic phase: this many events, one every --sporadic-gap s (0: none)",
    )
    parser.add_argument(
        "--sporadic-gap", type=float, default=8.0, help="seconds between sporadic events (8)"
    )
    parser.add_argument("--systems", default="naive,n8n", help="comma-separated, in run order")
    parser.add_argument(
        "--cap", type=float, default=120.0, help="seconds per phase, 0 = none (default 120)"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=10.0,
        help="actions missing after this many seconds without a new arrival are lost (default 10)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=300.0,
        help="before each phase, wait at most this many seconds for other processes on the "
        "machine to go quiet (default 300); a phase they disturbed anyway is noted",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=1,
        help="run a phase again when other processes disturbed it, at most this often (default 1)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        parser.error(f"unknown system(s) {', '.join(unknown)}; known: {', '.join(SYSTEMS)}")

    began = time.time()
    sink = Sink()
    results: list[Phase] = []
    timings: list[str] = []
    failed: list[str] = []
    try:
        for name in systems:
            try:
                phases, timing = run_system(name, args, sink)
            except NotImplementedError as exc:
                say(f"{name}: skipped ({exc})")
                failed.append(name)
                continue
            except Exception as exc:  # one system failing leaves the others' figures
                say(f"{name}: failed: {type(exc).__name__}: {exc}")
                failed.append(name)
                continue
            results.extend(phases)
            timings.append(timing)
            if args.json:  # after each system: a long run cut short keeps what it measured
                args.json.write_text(json.dumps(as_json(results), indent=2))
    finally:
        sink.stop()
    cap = f"cap {args.cap:.0f} s per phase" if args.cap else "no cap"
    print_table(
        results,
        title=f"light: {args.light} events, 1 sender · "
        f"burst: {args.events} events, {args.senders} senders · {cap}",
    )
    for timing in timings:
        print(f"  wall: {timing}")
    print(f"  total wall time {time.time() - began:.0f} s")
    if failed:
        sys.exit(f"not measured: {', '.join(failed)}")


if __name__ == "__main__":
    main()
