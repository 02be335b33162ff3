"""How many events one serve process runs at once: as many as its event loop keeps up with.

A process's zap runs share one event loop, and on a small machine its cores with the receiver,
the inbox's database and Prefect's server. Once the loop is busy all the time, more runs at
once add no throughput, only waiting: each run waits longer for its turn, so each step takes
longer from start to end; the steps that outlast ``RUNNING_AFTER`` record one state more for
Prefect's server to store (a cost that grows just when the machine has least to spare); and
events a worker has claimed wait inside it instead of in the inbox, where another worker could
take them.

So the process watches its loop: a timer every ``PERIOD`` seconds measures how late it fires.
While it fires more than ``TARGET`` late (smoothed), the number of runs allowed at once falls
by a quarter, never below ``FLOOR``; while it fires on time and runs are waiting for a slot, it
grows again by an eighth (at least one), up to the ceiling. Runs that wait on an app's answer
leave the loop idle and so keep the limit up: only a loop with more work than it can do holds
runs back. The watch runs only while runs do.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from flows import metrics

PERIOD = 0.1
"""Seconds between two looks at the loop's lateness."""
TARGET = 0.025
"""Lateness (seconds, smoothed) above which the loop counts as saturated."""
FLOOR = 8
"""The fewest runs at once the limit falls to."""


class LoopLimit:
    """An asyncio semaphore whose size follows the loop's lateness (see the module)."""

    def __init__(
        self,
        ceiling: int,
        *,
        floor: int = FLOOR,
        target: float = TARGET,
        period: float = PERIOD,
    ) -> None:
        self.ceiling = max(1, ceiling)
        self.floor = max(1, min(floor, self.ceiling))
        self.target, self.period = target, period
        self.limit = self.ceiling
        self.running = 0
        self.lateness = 0.0
        """The loop's smoothed lateness (seconds) at the last look."""
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._watch: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    async def acquire(self) -> None:
        if self._watch is None:
            self._watch = asyncio.get_running_loop().create_task(self._watching())
        if self.running < self.limit and not self.waiting:
            self.running += 1
            return
        slot = asyncio.get_running_loop().create_future()
        self._waiters.append(slot)
        try:
            await slot
        except asyncio.CancelledError:
            if slot.done() and not slot.cancelled():
                self.release()  # granted as it was cancelled: hand it on
            raise

    def release(self) -> None:
        self.running -= 1
        self._grant()

    def _grant(self) -> None:
        while self._waiters and self.running < self.limit:
            slot = self._waiters.popleft()
            if not slot.done():
                self.running += 1
                slot.set_result(None)

    def look(self, late: float) -> None:
        """One look at the loop: it fired ``late`` seconds late."""
        self.lateness = (self.lateness + late) / 2
        if self.lateness > self.target:
            self.limit = max(self.floor, self.limit * 3 // 4)
        elif self.lateness < self.target / 2 and self.waiting:
            self.limit = min(self.ceiling, self.limit + max(1, self.limit // 8))
            self._grant()
        metrics.LOOP_LATENESS.set(self.lateness)
        metrics.RUNS_AT_ONCE.set(self.limit)

    async def close(self) -> None:
        """Stop watching (runs still holding a slot finish as they are)."""
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch

    async def _watching(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.running or self.waiting:
                start = loop.time()
                await asyncio.sleep(self.period)
                self.look(max(0.0, loop.time() - start - self.period))
        finally:
            if self._watch is asyncio.current_task():
                self._watch = None
