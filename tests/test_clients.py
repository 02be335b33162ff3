"""The apps' pooled HTTP clients: warm connections are reused, and one the server closed while
it sat idle is noticed before a request is sent on it."""

from __future__ import annotations

import asyncio

import httpx

from connectors._clients import POOL_LIMITS, cheap_idle_checks

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok"


async def _server(close_after_answer: bool) -> tuple[asyncio.Server, list[int]]:
    """A keep-alive HTTP server on loopback; records each connection's client port; with
    ``close_after_answer`` it hangs up 50 ms after answering (as a server's idle timeout does)."""
    ports: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ports.append(writer.get_extra_info("peername")[1])
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(RESPONSE)
            await writer.drain()
            if close_after_answer:
                await asyncio.sleep(0.05)
                writer.close()
                return

    return await asyncio.start_server(handle, "127.0.0.1", 0), ports


def _client() -> httpx.AsyncClient:
    return cheap_idle_checks(httpx.AsyncClient(limits=POOL_LIMITS))


async def test_a_warm_connection_is_reused():
    server, ports = await _server(close_after_answer=False)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    async with server, _client() as client:
        for _ in range(5):
            assert (await client.get(url)).text == "ok"
    assert len(ports) == 1


async def test_a_connection_the_server_closed_while_idle_is_not_used_again():
    server, ports = await _server(close_after_answer=True)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    async with server, _client() as client:
        assert (await client.get(url)).text == "ok"
        await asyncio.sleep(0.2)  # the server has hung up meanwhile
        assert (await client.get(url)).text == "ok"
    assert len(ports) == 2


async def test_many_requests_at_once_share_the_pool():
    server, ports = await _server(close_after_answer=False)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    async with server, _client() as client:
        answers = await asyncio.gather(*(client.get(url) for _ in range(200)))
        assert all(a.text == "ok" for a in answers)
        again = await asyncio.gather(*(client.get(url) for _ in range(200)))
        assert all(a.text == "ok" for a in again)
    assert len(ports) <= POOL_LIMITS.max_connections
