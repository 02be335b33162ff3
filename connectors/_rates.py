"""Rate limits: the ``500/min`` notation, and the limiter every app's API client waits on.

A limit is a count per period, written ``COUNT/PERIOD`` — ``500/min``, ``10/s``, ``1000/hour``,
``100/10m`` — and means at most COUNT in any PERIOD (a sliding window, not one reset on the
minute: twice the limit never goes out across a boundary).

A ``RateLimiter`` is in-process by default. ``zapflow serve`` installs a shared store (the
inbox's database, ``use_shared_store``), and every limiter then counts in that store, so all
the processes that share an inbox — on one machine or several — stay under one account's limit
together; the calls waiting at once take their slots in one transaction. Should the store fail
(its database away), a limiter falls back to counting in process rather than stop the call.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

log = logging.getLogger("zapflow.rates")

_PERIODS = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("h", "hr", "hour", "hours"), 3600),
    **dict.fromkeys(("d", "day", "days"), 86400),
}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*([a-z]+)\s*$", re.IGNORECASE)
RATE_HELP = "COUNT/PERIOD such as 500/min, 10/s, 1000/hour or 100/10m"


@dataclass(frozen=True)
class Rate:
    """At most ``count`` in any ``per`` seconds."""

    count: int
    per: float

    def __str__(self) -> str:
        for name, seconds in (("day", 86400), ("hour", 3600), ("min", 60), ("s", 1)):
            if self.per == seconds:
                return f"{self.count}/{name}"
        for unit, seconds in (("h", 3600), ("m", 60)):
            if self.per % seconds == 0:
                return f"{self.count}/{self.per / seconds:g}{unit}"
        return f"{self.count}/{self.per:g}s"


def parse_rate(value: Any) -> Rate:
    """``"500/min"`` / ``"10/s"`` / ``"100/10m"`` / ``{count, per}`` → Rate."""
    if isinstance(value, Rate):
        return value
    if isinstance(value, dict) and set(value) == {"count", "per"}:
        return _checked(value["count"], value["per"], value)
    found = _RATE.match(value) if isinstance(value, str) else None
    unit = _PERIODS.get(found[3].lower()) if found else None
    if found is None or unit is None:
        raise ValueError(f"{value!r} is not a rate; expected {RATE_HELP}")
    return _checked(int(found[1]), float(found[2] or 1) * unit, value)


def _checked(count: Any, per: Any, value: Any) -> Rate:
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 1_000_000:
        raise ValueError(f"{value!r}: the count is a whole number from 1 to 1,000,000")
    if not isinstance(per, int | float) or not 1 <= per <= 86400:
        raise ValueError(f"{value!r}: the period is from 1 second to 1 day")
    return Rate(count, float(per))


RateSetting = Annotated[
    Rate,
    BeforeValidator(parse_rate),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "description": RATE_HELP, "examples": ["500/min", "10/s"]}),
]
"""A rate as a model field: written ``500/min``, read back the same way."""


class SharedStore(Protocol):
    """Where limiters of many processes count together (the inbox's database under serve)."""

    async def take_rate(self, key: str, rate: Rate, n: int = 1) -> tuple[int, float]:
        """Take up to ``n`` slots of ``key`` now; returns how many were taken and, when fewer
        than ``n``, in how many seconds the next one frees up."""
        ...


_shared: SharedStore | None = None


def use_shared_store(store: SharedStore | None) -> None:
    """Count every limiter of this process in ``store`` from now on (None: in process)."""
    global _shared
    _shared = store


@dataclass
class _Queue:
    """The calls of one event loop waiting for slots of one limiter from the shared store."""

    waiting: deque[asyncio.Future[bool]]
    taking: bool = False


class RateLimiter:
    """At most ``rate`` calls for ``key`` (an account): in the shared store when one is
    installed, else in this process.

    With a shared store, the calls that wait at once (in one event loop) take their slots in
    one transaction: a burst of 50 calls costs the store one write, not 50."""

    def __init__(self, key: str, rate: Rate) -> None:
        self.key, self.rate = key, rate
        self.sent: deque[float] = deque()
        # A thread lock, held only for bookkeeping (never across an await): the in-process
        # count holds whichever event loop or thread a call comes from.
        self.lock = threading.Lock()
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Queue] = (
            weakref.WeakKeyDictionary()
        )
        self._warned = False

    def _reserve(self) -> float:
        """Take a slot in process now (0.0), or say how long until one frees up."""
        with self.lock:
            now = time.monotonic()
            while self.sent and now - self.sent[0] >= self.rate.per:
                self.sent.popleft()
            if len(self.sent) < self.rate.count:
                self.sent.append(now)
                return 0.0
            return self.rate.per - (now - self.sent[0])

    async def wait(self) -> None:
        """Return when a call may go out (at once while under the limit)."""
        store = _shared
        if store is None or not await self._shared_slot(store):
            while (delay := self._reserve()) > 0:
                await asyncio.sleep(min(delay, self.rate.per))

    async def _shared_slot(self, store: SharedStore) -> bool:
        """Wait for a slot from the shared store (True), or False: the store failed, count in
        process."""
        loop = asyncio.get_running_loop()
        with self.lock:
            queue = self._queues.get(loop)
            if queue is None:
                queue = self._queues[loop] = _Queue(deque())
        slot: asyncio.Future[bool] = loop.create_future()
        queue.waiting.append(slot)
        if not queue.taking:
            queue.taking = True
            loop.create_task(self._take_for(queue, store))
        return await slot

    async def _take_for(self, queue: _Queue, store: SharedStore) -> None:
        """Take slots for the calls waiting in ``queue``, all at once, until none waits."""
        try:
            while True:
                while queue.waiting and queue.waiting[0].done():  # given up (cancelled)
                    queue.waiting.popleft()
                if not queue.waiting:
                    return
                wanted = sum(1 for slot in queue.waiting if not slot.done())
                try:
                    taken, delay = await store.take_rate(self.key, self.rate, wanted)
                except Exception as exc:  # the store is away: keep to the limit in process
                    if not self._warned:
                        self._warned = True
                        log.warning(
                            "the shared rate limit store failed (%s); counting %s in this process",
                            type(exc).__name__,
                            self.key,
                        )
                    while queue.waiting:
                        slot = queue.waiting.popleft()
                        if not slot.done():
                            slot.set_result(False)
                    return
                self._warned = False
                while taken and queue.waiting:
                    slot = queue.waiting.popleft()
                    if not slot.done():
                        slot.set_result(True)
                        taken -= 1
                if queue.waiting:
                    await asyncio.sleep(min(max(delay, 0.001), self.rate.per))
        finally:
            queue.taking = False


_limiters: dict[tuple[str, Rate], RateLimiter] = {}
_limiters_lock = threading.Lock()


def limiter(key: str, rate: Rate) -> RateLimiter:
    """The process's limiter of ``key`` at ``rate`` (one per account and rate)."""
    with _limiters_lock:
        found = _limiters.get((key, rate))
        if found is None:
            found = _limiters[(key, rate)] = RateLimiter(key, rate)
        return found
