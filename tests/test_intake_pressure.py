"""Intake first: while the receiver commits deliveries faster than the hot rate, zap runs wait
for it to calm down — never longer than the hold limit; at a light pace they never wait."""

from __future__ import annotations

import asyncio
import time

from flows.intake.pressure import IntakePressure


async def nudge_at(pressure: IntakePressure, per_second: float, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pressure.nudged()
        await asyncio.sleep(1 / per_second)


async def test_runs_start_at_once_at_a_light_pace():
    pressure = IntakePressure(hot_rate=100, max_hold=2.0)
    nudging = asyncio.create_task(nudge_at(pressure, 20, 0.5))
    for _ in range(5):
        started = time.monotonic()
        await pressure.calm()
        assert time.monotonic() - started < 0.01
        await asyncio.sleep(0.1)
    await nudging
    assert pressure.held == 0


async def test_a_run_waits_for_a_burst_to_end():
    pressure = IntakePressure(hot_rate=100, max_hold=2.0)
    burst = asyncio.create_task(nudge_at(pressure, 500, 0.6))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await pressure.calm()
    waited = time.monotonic() - started
    assert 0.4 < waited < 1.0, waited  # until the burst ended (~0.5 s more) and went quiet
    assert pressure.held == 1
    await burst


async def test_a_sustained_stream_delays_runs_but_never_stops_them():
    pressure = IntakePressure(hot_rate=100, max_hold=0.3)
    stream = asyncio.create_task(nudge_at(pressure, 500, 1.5))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await asyncio.gather(*(pressure.calm() for _ in range(50)))
    assert 0.25 < time.monotonic() - started < 0.6  # all released after max_hold, together
    stream.cancel()
