"""Intake benchmark (first cut): `zapflow serve`'s receiver, inbox and dispatcher, in one run.

    .venv/bin/python bench/bench_intake.py [--events 2000] [--senders 50]

Measures, for a catch-hook zap of one trivial step:
- accepted/s and ack p50/p99 with N concurrent senders (each ack means committed to the inbox);
- processed/s: from the first event to the last zap run finished, with full Prefect history;
- event → finished run p50/p99, lost and doubled.
Uses the Prefect server at PREFECT_API_URL if set, else a throwaway one. The comparison with the
naive design and n8n on the same events is bench/bench_compare.py.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from harness import pct, send_events

ZAP = """\
zap: bench-hook
trigger: {app: builtin, event: catch_hook}
steps:
  - {id: a, action: builtin.lookup, input: {key: "{{ trigger.k }}", table: {x: 1}, fallback: 0}}
"""


def hook_event(n: int, event_id: str, sent: float) -> dict[str, object]:
    return {"k": "x", "n": n, "id": event_id, "sent": sent}


async def bench(events: int, senders: int, folder: Path) -> None:
    from flows.intake import serve as serving

    (folder / "zaps").mkdir()
    (folder / "zaps" / "bench.yaml").write_text(ZAP)
    lines: list[str] = []
    task = asyncio.create_task(
        serving.serve(
            folder / "zaps",
            port=8791,
            inbox_url=f"sqlite:///{folder / 'inbox.db'}",
            concurrency=8,
            report=lines.append,
        )
    )
    while not any("catch hook of bench-hook" in line for line in lines):
        await asyncio.sleep(0.05)
    hook = next(line for line in lines if "catch hook" in line).split(": ", 1)[1].split()[0]

    # The senders run in their own process (harness.send_events), with plain keep-alive sockets:
    # an HTTP client library in this process would measure itself (httpx tops out near 300 req/s).
    sends = await asyncio.to_thread(send_events, hook, events, senders, hook_event)
    refused = [s for s in sends if not s.accepted]
    if refused:
        raise RuntimeError(f"{len(refused)} events not accepted, e.g. status {refused[0].status}")
    first_send = min(s.sent for s in sends)
    accept_time = max(s.ack for s in sends) - first_send
    acks = [s.latency for s in sends]

    from flows.intake.inbox import Inbox

    inbox = await Inbox.open(f"sqlite:///{folder / 'inbox.db'}")
    while (await inbox.counts()).get("done", 0) < events:
        await asyncio.sleep(0.2)
    process_time = time.time() - first_send
    counts = await inbox.counts()
    await inbox.close()
    task.cancel()

    print(f"intake: {events} events, {senders} concurrent senders, catch hook → 1 trivial step")
    print(f"  accepted/s           {events / accept_time:8.0f}")
    print(
        f"  ack p50 / p99        {statistics.median(acks) * 1000:8.1f} ms / "
        f"{pct(acks, 0.99) * 1000:.1f} ms"
    )
    print(
        f"  processed/s (history) {events / process_time:7.1f}   (all done after "
        f"{process_time:.1f} s)"
    )
    print(f"  inbox at the end     {counts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--senders", type=int, default=50)
    args = parser.parse_args()
    from prefect.settings import PREFECT_API_URL

    with tempfile.TemporaryDirectory() as tmp:
        if PREFECT_API_URL.value():
            asyncio.run(bench(args.events, args.senders, Path(tmp)))
            return
        from prefect.testing.utilities import prefect_test_harness

        with prefect_test_harness(server_startup_timeout=180):
            asyncio.run(bench(args.events, args.senders, Path(tmp)))


if __name__ == "__main__":
    main()
