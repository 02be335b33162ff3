"""Waiting in a test for something that happens in the background (a poll, a run)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any


async def until(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Wait until ``check()`` (or what it awaits) is true, and return it."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if inspect.isawaitable(found):
            found = await found
        if found:
            return found
        assert time.monotonic() < deadline, "gave up waiting"
        await asyncio.sleep(0.02)
