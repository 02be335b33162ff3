"""Intake benchmark (first cut): `zapflow serve`'s receiver, inbox and dispatcher, in one run.

    .venv/bin/python bench/bench_intake.py [--events 2000] [--senders 50]

Measures, for a catch-hook zap of one trivial step:
- accepted/s and ack p50/p99 with N concurrent senders (each ack means committed to the inbox);
- processed/s: from the first event to the last zap run finished, with full Prefect history;
- event → finished run p50/p99, lost and doubled.
Uses the Prefect server at PREFECT_API_URL if set, else a throwaway one. The comparison with the
naive design and n8n (issue 9) comes later; this is where the engine stands today.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ZAP = """\
zap: bench-hook
trigger: {app: builtin, event: catch_hook}
steps:
  - {id: a, action: builtin.lookup, input: {key: "{{ trigger.k }}", table: {x: 1}, fallback: 0}}
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


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

    # The senders run in their own process with plain keep-alive sockets: an HTTP client
    # library in this process would measure itself (httpx tops out near 300 req/s here).
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--send",
        hook,
        str(events),
        str(senders),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    accept_time = time.perf_counter() - t0
    acks = json.loads(out)

    from flows.intake.inbox import Inbox

    inbox = await Inbox.open(f"sqlite:///{folder / 'inbox.db'}")
    while (await inbox.counts()).get("done", 0) < events:
        await asyncio.sleep(0.2)
    process_time = time.perf_counter() - t0
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


async def send(url: str, events: int, senders: int) -> list[float]:
    """``senders`` keep-alive connections posting ``events`` JSON bodies; each ack's latency."""
    target = urlsplit(url)
    acks: list[float] = []
    left = [events]

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(target.hostname, target.port)
        while left[0] > 0:
            left[0] -= 1
            body = json.dumps({"k": "x", "n": left[0]}).encode()
            request = (
                f"POST {target.path} HTTP/1.1\r\nHost: {target.netloc}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body
            started = time.perf_counter()
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head.decode(errors="replace"))
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            await reader.readexactly(length)
            acks.append(time.perf_counter() - started)
        writer.close()

    await asyncio.gather(*(connection() for _ in range(senders)))
    return acks


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--send":
        url, events, senders = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        print(json.dumps(asyncio.run(send(url, events, senders))))
        return
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
