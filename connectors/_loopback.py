"""Serving a small ASGI app (a sandbox, a test's webhook receiver) on a loopback port in a
background thread, with real HTTP: for sandboxes, tests, the demo and users' scripts."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening-ready socket on ``host:port`` (port 0: a free one). Binding first means the
    URL is known before the server starts, and a busy port fails here, plainly."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=TCP so asyncio sets TCP_NODELAY on accepted connections (else a keep-alive
    # request waits ~40 ms for a delayed ACK).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextmanager
def serve_socket(app: Any, sock: socket.socket, *, startup_timeout: float = 10.0) -> Iterator[None]:
    """Serve ``app`` with uvicorn on ``sock`` in a daemon thread until the block ends."""
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="zapflow-sandbox", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"the server on {url_of(sock)} did not start")
        time.sleep(0.005)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve any ASGI app on a loopback port; yields its URL."""
    sock = bind(host, port)
    with serve_socket(app, sock):
        yield url_of(sock)
