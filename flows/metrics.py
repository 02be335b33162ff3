"""Prometheus metrics of a serve process, for operators who watch dashboards, not terminals.

Each process has its own registry (with the process's CPU, memory and open files): a receiver
(its ``/metrics`` on the hook port) counts deliveries; a serve process that runs zaps counts
runs by zap and state, times steps, measures how long events wait before a worker claims them
(its ``/metrics`` on the worker's port, or ``--metrics-port``). Both report the inbox's queue
(events by state, deliveries kept unrecognised) as read when scraped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

CONTENT_TYPE = CONTENT_TYPE_LATEST

DELIVERIES = Counter(
    "zapflow_deliveries",
    "Webhook deliveries answered by this receiver, by app and outcome (accepted: new events "
    "committed; duplicate: a redelivery; empty: no event in it; unrecognised: kept for "
    "reprocessing; refused: answered 4xx)",
    ["app", "outcome"],
    registry=REGISTRY,
)
EVENTS_ACCEPTED = Counter(
    "zapflow_events_accepted",
    "Events committed to the inbox by this receiver, by app",
    ["app"],
    registry=REGISTRY,
)
RUNS = Counter(
    "zapflow_runs",
    "Zap runs this worker ended, by zap and state (completed, filtered, failed, waiting: parked "
    "in a delay or an autoreplay wait)",
    ["zap", "state"],
    registry=REGISTRY,
)
STEP_SECONDS = Histogram(
    "zapflow_step_seconds",
    "How long each step took (retries included), by zap and step",
    ["zap", "step"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
CLAIM_LAG = Histogram(
    "zapflow_claim_lag_seconds",
    "From an event's arrival to its first claim by a worker",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
    registry=REGISTRY,
)
INBOX_EVENTS = Gauge(
    "zapflow_inbox_events",
    "Events in the inbox by state (pending: waiting for a worker; claimed: running; parked: "
    "waiting in a delay, for a limit's slot or held by flood protection; done), when scraped",
    ["state"],
    registry=REGISTRY,
)
RUNS_AT_ONCE = Gauge(
    "zapflow_runs_at_once_limit",
    "How many events this process runs at once for now, across its zaps: as many as it holds "
    "(500), or fewer while its event loop is late (saturated)",
    registry=REGISTRY,
)
LOOP_LATENESS = Gauge(
    "zapflow_loop_lateness_seconds",
    "How late this process's event loop ran a timer, smoothed, at its last look",
    registry=REGISTRY,
)
UNRECOGNISED = Gauge(
    "zapflow_unrecognised_waiting",
    "Deliveries kept because their app could not read them, waiting to be reprocessed",
    registry=REGISTRY,
)


async def exposition(
    counts: Callable[[], Awaitable[dict[str, int]]],
    unrecognised: Callable[[], Awaitable[int]],
) -> bytes:
    """The metrics in Prometheus' text format, the inbox's gauges read now (left as they were
    when the inbox cannot be read: the scrape still answers)."""
    try:
        for state, value in (await counts()).items():
            INBOX_EVENTS.labels(state).set(value)
        UNRECOGNISED.set(await unrecognised())
    except Exception:  # the other metrics are still worth answering with
        pass
    return generate_latest(REGISTRY)


def record_run(zap: str, state: str, steps: list[Any]) -> None:
    """A run ended: count it, and time each step it ran now (``StepRecord``)."""
    RUNS.labels(zap, state).inc()
    for step in steps:
        if step.status in ("completed", "failed", "skipped") and step.seconds:
            STEP_SECONDS.labels(zap, step.id).observe(step.seconds)
