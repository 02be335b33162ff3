"""One measured phase against one system (send, wait for the actions to settle, compute the
figures), and the table that shows the phases one row each."""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from load import MakeBody, Send, send_events
from procs import (
    BUSY,
    _bench_cpu_seconds,
    _PeakMemory,
    cpu_seconds_of,
    machine_cpu_seconds,
    memory_of,
    proportional_memory_of,
)
from sink import Sink

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
    cpu_before = cpu_seconds_of(pids), _bench_cpu_seconds(sink.pid), *machine_cpu_seconds()
    start = time.time()
    deadline = start + cap if cap else None
    with _PeakMemory(pids) as peak:
        sends = send_events(
            url, events, senders, make_body, prefix=prefix, deadline=deadline, rate=rate
        )
        expected = {s.id for s in sends if s.accepted}
        result.settled = _settle(sink, prefix, expected, settle, (deadline or time.time()) + drain)
        result.seconds = time.time() - start
        cpu_after = cpu_seconds_of(pids), _bench_cpu_seconds(sink.pid), *machine_cpu_seconds()
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
