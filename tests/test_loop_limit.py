"""A serve process runs as many events at once as its loop keeps up with: runs waiting on an
app's answer all go at once; a loop with more work than it can do holds runs back, and lets
them go again when it catches up."""

from __future__ import annotations

import asyncio
import time

from flows.loop_limit import LoopLimit


class Peak:
    def __init__(self) -> None:
        self.now = self.peak = 0

    async def run(self, limit: LoopLimit, body) -> None:  # type: ignore[no-untyped-def]
        await limit.acquire()
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            await body()
        finally:
            self.now -= 1
            limit.release()


async def test_runs_waiting_on_apps_all_run_at_once():
    limit = LoopLimit(50, floor=4, period=0.02, target=0.03)
    peak = Peak()
    await asyncio.gather(*(peak.run(limit, lambda: asyncio.sleep(0.3)) for _ in range(40)))
    assert peak.peak == 40 and limit.limit == 50
    await limit.close()


async def test_a_saturated_loop_holds_runs_back_and_lets_them_go_when_it_catches_up():
    limit = LoopLimit(20, floor=4, period=0.02, target=0.03)
    peak = Peak()

    async def busy() -> None:  # work that keeps the loop busy: 10 ms of CPU at a time
        for _ in range(4):
            time.sleep(0.01)
            await asyncio.sleep(0)

    await asyncio.gather(*(peak.run(limit, busy) for _ in range(60)))
    assert limit.limit < 10, limit.limit  # fell towards the floor while the loop was late
    assert limit.limit >= 4
    held = limit.limit

    # The loop is idle again: runs waiting for a slot get more of them.
    peak.peak = 0
    await asyncio.gather(*(peak.run(limit, lambda: asyncio.sleep(0.2)) for _ in range(60)))
    assert limit.limit > held and peak.peak > held, (held, limit.limit, peak.peak)
    assert limit.running == 0 and limit.waiting == 0
    await limit.close()


async def test_a_run_cancelled_while_waiting_for_a_slot_takes_none():
    limit = LoopLimit(1, period=0.02)
    await limit.acquire()
    waiter = asyncio.create_task(limit.acquire())
    await asyncio.sleep(0.01)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    limit.release()
    assert limit.running == 0
    await asyncio.wait_for(limit.acquire(), 1)  # the slot is free for the next run
    limit.release()
    await limit.close()
