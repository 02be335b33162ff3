"""Shared parts of the benchmarks, one module each — ``sink``, ``load``, ``procs``, ``phases`` —
brought together here for the benchmark scripts, with the events they all send and the helper
processes' entry point.

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
import json
import sys
from typing import Any

from load import MakeBody, Send, _load, _send, send_events
from phases import Phase, as_json, measure, pct, print_table, summary
from procs import (
    BUSY,
    ThrowawayPrefect,
    _cpu_ticks,
    _tree,
    cpu_seconds_of,
    free_port,
    memory_of,
    proportional_memory_of,
    stat_ticks,
    wait_for_quiet,
    wait_until,
)
from sink import Sink, _sink

__all__ = [
    "BUSY",
    "MakeBody",
    "Phase",
    "Send",
    "Sink",
    "ThrowawayPrefect",
    "_cpu_ticks",
    "_tree",
    "as_json",
    "cpu_seconds_of",
    "free_port",
    "measure",
    "memory_of",
    "missed_enquiry",
    "pct",
    "print_table",
    "proportional_memory_of",
    "send_events",
    "stat_ticks",
    "summary",
    "wait_for_quiet",
    "wait_until",
]


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
