"""Running the CINNOX sandbox on a loopback port in a background thread, with real HTTP: for
tests, the demo and users' scripts (any other ASGI app: ``connectors._loopback``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from connectors._loopback import bind, serve_socket, url_of
from connectors._loopback import serve_in_thread as serve_in_thread  # re-exported
from connectors.cinnox import wire
from connectors.cinnox.sandbox.control import SandboxControl


@contextmanager
def run_in_thread(
    db_path: str | Path | None = None,
    *,
    rate_limit: int = wire.RATE_LIMIT_PER_MINUTE,
    host: str = "127.0.0.1",
    port: int = 0,
    retry_delays: Sequence[float] = (1.0, 4.0, 16.0),
    sms_receipt_delay: float = 2.0,
    challenge_timeout: float = 5.0,
    delivery_timeout: float = 10.0,
) -> Iterator[tuple[str, SandboxControl]]:
    """Run a CINNOX sandbox on ``host:port`` (default: a free loopback port) in a background
    thread; yields ``(base_url, control)``: the Base URL its accounts show, and a client of its
    control API. ``db_path`` None keeps the state in memory."""
    from connectors.cinnox.sandbox.app import create_app
    from connectors.cinnox.sandbox.state import SandboxConfig

    sock = bind(host, port)
    base_url = url_of(sock)
    app = create_app(
        SandboxConfig(
            db=db_path,
            rate_limit=rate_limit,
            base_url=base_url,
            retry_delays=retry_delays,
            sms_receipt_delay=sms_receipt_delay,
            challenge_timeout=challenge_timeout,
            delivery_timeout=delivery_timeout,
        )
    )
    with serve_socket(app, sock), SandboxControl(base_url) as control:
        yield base_url, control
