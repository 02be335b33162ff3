"""One running sandbox: how it is configured, its state, faults, rate limiter and background
tasks (the API and control routes in ``app``, ``api`` and ``control_api`` work on it)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.requests import Request

from connectors.cinnox import wire
from connectors.cinnox.sandbox import demo
from connectors.cinnox.sandbox.events import Dispatcher
from connectors.cinnox.sandbox.guards import Faults, RateLimiter
from connectors.cinnox.sandbox.store import Doc, Store

log = logging.getLogger("zapflow.sandbox")


@dataclass
class SandboxConfig:
    """How a sandbox runs. Tests shorten the waits; a user only ever sets the first three."""

    db: str | Path | None = None
    """SQLite file; None for an in-memory database."""
    rate_limit: int = wire.RATE_LIMIT_PER_MINUTE
    base_url: str | None = None
    """The Base URL accounts show; None: the URL each request came in on."""
    rate_window: float = 60.0
    retry_delays: Sequence[float] = field(default=(1.0, 4.0, 16.0))
    """Seconds before each retry of a failed webhook delivery."""
    delivery_timeout: float = 10.0
    challenge_timeout: float = 5.0
    sms_receipt_delay: float = 2.0
    """Seconds between send_sms and its delivery receipt event."""


class Sandbox:
    """One running sandbox: its state, faults, rate limiter and background tasks."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.store = Store(config.db)
        self.faults = Faults()
        self.limiter = RateLimiter(config.rate_limit, config.rate_window)
        self.tasks: set[asyncio.Task[Any]] = set()
        self.dispatcher = Dispatcher(
            self.store,
            self.spawn,
            retry_delays=config.retry_delays,
            timeout=config.delivery_timeout,
        )
        self.prepare()

    def prepare(self) -> None:
        """Demo data in an empty database, and always at least one account to connect with."""
        if self.store.is_empty():
            with self.store.batch():
                demo.seed(self.store)
        if not self.store.accounts():
            self.store.add_account(demo.DEFAULT_ACCOUNT)

    def reset(self, *, accounts: bool = False) -> None:
        """Back to the demo data (and, with ``accounts``, to the one default account); pending
        deliveries and SMS receipts are dropped."""
        for task in list(self.tasks):
            task.cancel()
        self.store.clear(accounts=accounts)
        self.faults.clear()
        self.limiter.clear()
        self.prepare()

    def base_url(self, request: Request | None = None) -> str:
        if self.config.base_url:
            return self.config.base_url.rstrip("/")
        return str(request.base_url).rstrip("/") if request is not None else ""

    def account(self, account: Doc, request: Request | None = None) -> Doc:
        """An account as the Dashboard shows it: name, App ID, App Token and Base URL."""
        return {**account, "baseUrl": self.base_url(request)}

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in the background (deliveries, receipts): never in a request's way."""
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    async def shutdown(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.dispatcher.close()
        self.store.close()
