"""Zap engine benchmark: what compiling and running a zap costs, in one run, printed as figures.

    .venv/bin/python bench/bench_engine.py [--runs 30]

1. compile: parse + validate a zap file, compile its plan, build its Prefect flow;
2. the engine alone: CPU per run of a compiled three-step zap, run directly (no Prefect, no
   I/O) in this process — what ``--engine-only`` prints. Timing is noisy on a shared machine;
   for a count that is not, count instructions with valgrind, with and without the runs:

       valgrind --tool=callgrind .venv/bin/python bench/bench_engine.py --engine-only \
           --engine-runs 0                    # then --engine-runs 2000

   (the difference of the two "I refs", divided by 2000, is the instructions per run);
3. per-run overhead: a compiled zap of three trivial steps against a hand-written async Prefect
   flow with three equivalent tasks, both recorded by the same Prefect server;
4. ``zapflow test --dry-run`` wall time, as a user's shell sees it (a fresh process each time).

Uses the Prefect server at PREFECT_API_URL if set, else a throwaway one (SQLite, ~20 s to start).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "zaps" / "order-follow-up.yaml"
TRIVIAL = """\
zap: bench-trivial
trigger: {app: builtin, event: catch_hook}
steps:
  - {id: a, action: builtin.lookup, input: {key: "{{ trigger.k }}", table: {x: 1}, fallback: 0}}
  - {id: b, action: builtin.lookup, input: {key: "{{ steps.a.value }}", table: {"1": 2}}}
  - {id: c, action: builtin.lookup, input: {key: "{{ steps.b.value }}", table: {"2": 3}}}
"""


def timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def line(label: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    return (
        f"  {label:<44} median {statistics.median(ms):8.2f} ms   p95 {p95:8.2f} ms   (n={len(ms)})"
    )


def bench_compile(n: int) -> None:
    from flows.compiler import compile_zap
    from flows.loader import load_zap_text
    from flows.plan import compile_plan

    text = EXAMPLE.read_text()
    load_zap_text(text)  # warm imports and caches
    print("compile")
    print(line("load + validate order-follow-up.yaml", timed(lambda: load_zap_text(text), n)))
    zap = load_zap_text(text)
    print(line("compile its plan", timed(lambda: compile_plan(zap), n)))
    plan = compile_plan(zap)
    print(line("build its Prefect flow", timed(lambda: compile_zap(plan), n)))


async def bench_runs(n: int) -> None:
    from prefect import flow, task

    from connectors import registry
    from flows.compiler import prefect_session, run_with_history
    from flows.events import Event
    from flows.loader import load_zap_text

    zap = load_zap_text(TRIVIAL)
    lookup = registry.action("builtin.lookup")

    @task
    async def plain_step(key: object, table: dict) -> object:
        return (await lookup.run(lookup.input_model(key=key, table=table), None)).value  # type: ignore[arg-type]

    @flow(name="bench-plain")
    async def plain_flow(k: str) -> object:
        a = await plain_step(k, {"x": 1})
        b = await plain_step(str(a), {"1": 2})
        return await plain_step(str(b), {"2": 3})

    async def compiled() -> None:
        event = Event(app="builtin", trigger="catch_hook", payload={"k": "x"})
        state = await run_with_history(zap, event)
        assert state.is_completed(), state

    async def plain() -> None:
        assert await plain_flow("x") == 3

    for fn in (compiled, plain):  # warm up: first runs register flows and open clients
        await fn()
    print("per run, recorded by the Prefect server (sequential, one client shared)")
    async with prefect_session():
        results = {}
        for label, fn in (
            ("compiled zap (3 steps)", compiled),
            ("hand-written flow (3 tasks)", plain),
        ):
            times = []
            for _ in range(n):
                start = time.perf_counter()
                await fn()
                times.append(time.perf_counter() - start)
            results[label] = times
            print(line(label, times))
    overhead = statistics.median(results["compiled zap (3 steps)"]) - statistics.median(
        results["hand-written flow (3 tasks)"]
    )
    print(f"  zapflow's overhead per run: {overhead * 1000:+.1f} ms (median against median)")


async def bench_engine_alone(n: int) -> None:
    from flows.events import Event
    from flows.loader import load_zap_text
    from flows.plan import plan_of
    from flows.runtime import ZapRun

    plan = plan_of(load_zap_text(TRIVIAL))

    async def one(i: int) -> None:
        event = Event(app="builtin", trigger="catch_hook", payload={"k": "x", "i": i})
        outcome = await ZapRun(plan, event).execute()
        assert outcome.status == "completed", outcome.message

    for i in range(200):  # warm up: templates compiled, caches filled
        await one(i)
    if n == 0:
        return
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(n):
        await one(i)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print("the engine alone (a compiled zap of 3 steps run directly, no Prefect)")
    print(
        f"  CPU per run {cpu / n * 1e6:8.1f} µs   wall per run {wall / n * 1e6:8.1f} µs   (n={n})"
    )


def bench_dry_run(n: int) -> None:
    cmd = [
        sys.executable,
        "-c",
        "from flows.cli import main; main()",
        "test",
        str(EXAMPLE),
        "--dry-run",
    ]
    print("zapflow test --dry-run (fresh process each time, no server)")
    times = timed(lambda: subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT), n)
    print(line("order-follow-up.yaml, wall time", times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30, help="runs per measurement")
    parser.add_argument("--engine-runs", type=int, default=5000, help="runs of the engine alone")
    parser.add_argument("--engine-only", action="store_true", help="only the engine alone")
    args = parser.parse_args()
    asyncio.run(bench_engine_alone(args.engine_runs))
    if args.engine_only:
        return
    bench_compile(max(args.runs, 50))
    bench_dry_run(min(args.runs, 10))
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        asyncio.run(bench_runs(args.runs))
        return
    from prefect.testing.utilities import prefect_test_harness

    with tempfile.TemporaryDirectory(), prefect_test_harness(server_startup_timeout=180):
        asyncio.run(bench_runs(args.runs))


if __name__ == "__main__":
    main()
