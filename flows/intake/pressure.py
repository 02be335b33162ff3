"""Intake first: zap runs hold back while the receiver is taking a burst.

On a small machine the receiver, the zap runs and the Prefect server share the CPU. During a
burst every event waits in the inbox anyway (runs go at ~100-150/s, deliveries arrive at
~1,000/s and more), so running zaps *during* it only slows the acknowledgements the senders
are waiting for. The receiver nudges the dispatcher once per commit; while the nudges come
faster than ``hot_rate`` a second, a zap run about to start waits until they slow down — at
most ``max_hold`` seconds, so a sustained stream of deliveries delays runs, never stops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque

HOT_RATE = 200.0
"""Receiver commits a second, over WINDOW, above which the intake counts as busy: a burst of a few
dozen deliveries (a demo, a small import) does not hold runs back."""
WINDOW = 0.25
MAX_HOLD = 2.0
"""The longest a zap run waits for the intake to calm down (seconds)."""


class IntakePressure:
    def __init__(
        self, *, hot_rate: float = HOT_RATE, window: float = WINDOW, max_hold: float = MAX_HOLD
    ) -> None:
        self.window, self.max_hold = window, max_hold
        self.threshold = max(1, round(hot_rate * window))
        self.held = 0
        """Zap runs that waited for the intake to calm down (stats)."""
        self._nudges: deque[float] = deque()
        self._calm = asyncio.Event()
        self._calm.set()
        self._watching: asyncio.Task[None] | None = None

    def nudged(self) -> None:
        """The receiver committed deliveries (called on the dispatcher's loop)."""
        self._nudges.append(time.monotonic())
        if self._calm.is_set() and self._busy():
            self._calm.clear()
            self._watching = asyncio.get_running_loop().create_task(self._until_calm())

    def _busy(self) -> bool:
        since = time.monotonic() - self.window
        while self._nudges and self._nudges[0] < since:
            self._nudges.popleft()
        return len(self._nudges) >= self.threshold

    async def _until_calm(self) -> None:
        while self._busy():
            await asyncio.sleep(self.window / 2)
        self._calm.set()

    async def calm(self) -> None:
        """Return when the intake is not busy, or after ``max_hold`` seconds."""
        if self._calm.is_set():
            return
        self.held += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._calm.wait(), self.max_hold)
