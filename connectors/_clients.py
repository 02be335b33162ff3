"""What apps that call HTTP APIs share: pooled ``httpx.AsyncClient``s and reading Retry-After.

An ``AsyncClient``'s connection pool belongs to the event loop it first ran on, and one process
may run zaps in several loops (threads, ``asyncio.run`` per CLI command). So each app keeps a
``ClientPool``: one client per key (an account, a set of default headers …) and per loop; a
finished loop and its clients are dropped with it.
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref
from collections.abc import Callable
from email.utils import parsedate_to_datetime

import httpx

POOL_LIMITS = httpx.Limits(max_connections=50, max_keepalive_connections=50)
"""Connection limits of every app's pooled client. As many kept alive as may be open: httpcore
closes an idle connection whenever the pool holds more connections than it may keep alive
(it counts busy ones too), so with fewer, a burst of steps reconnected for most requests."""


class ClientPool:
    """Reusable clients, by key, in the running event loop."""

    def __init__(self) -> None:
        self._loops: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, httpx.AsyncClient]
        ] = weakref.WeakKeyDictionary()

    def get(self, key: str, make: Callable[[], httpx.AsyncClient]) -> httpx.AsyncClient:
        """The running loop's client for ``key``, made with ``make()`` the first time."""
        pool = self._loops.setdefault(asyncio.get_running_loop(), {})
        client = pool.get(key)
        if client is None or client.is_closed:
            client = pool[key] = make()
        return client

    async def close_all(self) -> None:
        """Close the running loop's clients (tests, shutdown)."""
        for client in self._loops.pop(asyncio.get_running_loop(), {}).values():
            await client.aclose()


def retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (a number, or an HTTP date), or None."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:  # an HTTP date is always GMT
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))
