"""What apps that call HTTP APIs share: pooled ``httpx.AsyncClient``s and reading Retry-After.

An ``AsyncClient``'s connection pool belongs to the event loop it first ran on, and one process
may run zaps in several loops (threads, ``asyncio.run`` per CLI command). So each app keeps a
``ClientPool``: one client per key (an account, a set of default headers …) and per loop; a
finished loop and its clients are dropped with it.
"""

from __future__ import annotations

import asyncio
import math
import select
import socket
import ssl
import time
import weakref
from collections.abc import Callable, Iterable
from email.utils import parsedate_to_datetime
from typing import Any

import httpcore
import httpx
from httpcore._backends.auto import AutoBackend

POOL_LIMITS = httpx.Limits(max_connections=50, max_keepalive_connections=50)
"""Connection limits of every app's pooled client. As many kept alive as may be open: httpcore
closes an idle connection whenever the pool holds more connections than it may keep alive
(it counts busy ones too), so with fewer, a burst of steps reconnected for most requests."""


def cheap_idle_checks(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """The client, its direct connections made to tell cheaply whether an idle one was closed.

    For every request it sends, httpcore asks each idle connection of the pool whether its
    socket has turned readable (closed by the server); anyio answers by building a dict of the
    socket's attributes, getpeername() included. With a pool of warm connections that was a
    third of the time of a process running a burst of HTTP steps (py-spy); one poll() will do.
    """
    # Patched on the client's own transport, not passed as transport=: that would also turn
    # off the proxies httpx takes from the environment (HTTPS_PROXY …).
    pool = getattr(client._transport, "_pool", None)
    if type(pool) is httpcore.AsyncConnectionPool:
        pool._network_backend = _Backend()
    return client


def _readable(sock: socket.socket | None) -> bool:
    if sock is None or sock.fileno() < 0:
        return True  # gone: the next read returns b"" at once
    poll = select.poll()
    poll.register(sock.fileno(), select.POLLIN)
    return bool(poll.poll(0))


class _Stream(httpcore.AsyncNetworkStream):
    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self._socket: socket.socket | None = inner.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            return _readable(self._socket)
        return self._inner.get_extra_info(info)


class _Backend(httpcore.AsyncNetworkBackend):
    def __init__(self) -> None:
        self._inner = AutoBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _Stream(stream)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        return _Stream(await self._inner.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


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


def http_url(value: str, what: str) -> httpx.URL:
    """``value`` as an absolute http(s) URL, or ValueError saying what is wrong."""
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL as exc:
        raise ValueError(f"{what} is not a valid URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"{what} must be an http:// or https:// URL with a host, got {value!r}")
    return url
