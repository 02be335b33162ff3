"""What an app's shared API rate limit costs per call: the limiter counting in the inbox.

    .venv/bin/python bench/bench_rates.py [--calls 1000] [--postgres URL]

Under `zapflow serve` every app limiter (CINNOX's ``rate_limit``, 500/min by default) counts its
calls in the inbox's ``zapflow_rate_use`` table, so every serve sharing the inbox keeps to one
account limit. This prints the milliseconds per call of that count on a fresh SQLite inbox (and
on PostgreSQL when ``--postgres`` is given): calls one after another (one transaction each), and
``--calls`` waiting at once (taken together, one transaction per group) — the case of a burst.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time

from connectors._rates import Rate, RateLimiter, use_shared_store
from flows.intake.inbox import Inbox


async def measure(url: str, calls: int) -> tuple[float, float]:
    inbox = await Inbox.open(url)
    use_shared_store(inbox)
    try:
        limiter = RateLimiter(f"bench:{time.time_ns()}", Rate(1_000_000, 60))
        started = time.perf_counter()
        for _ in range(min(calls, 300)):
            await limiter.wait()
        one_by_one = (time.perf_counter() - started) / min(calls, 300)
        started = time.perf_counter()
        await asyncio.gather(*(limiter.wait() for _ in range(calls)))
        at_once = (time.perf_counter() - started) / calls
    finally:
        use_shared_store(None)
        await inbox.close()
    return one_by_one, at_once


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--postgres", default=None, help="e.g. postgresql+asyncpg://…/test")
    args = parser.parse_args()
    urls = {"SQLite": f"sqlite+aiosqlite:///{tempfile.mkdtemp()}/inbox.db"}
    if args.postgres:
        urls["PostgreSQL"] = args.postgres
    print("shared API rate limit, ms per call")
    for name, url in urls.items():
        one_by_one, at_once = asyncio.run(measure(url, args.calls))
        print(
            f"  {name:<10} one after another {one_by_one * 1000:6.2f}"
            f"   {args.calls} waiting at once {at_once * 1000:6.3f}"
        )


if __name__ == "__main__":
    main()
