"""The sandbox's ASGI app (Starlette): CINNOX's API under ``/v1/api/apps/{app_id}`` and the
control API under ``/sandbox``.

Every API request goes through, in order: injected faults (as a flaky network or service would
answer, before anything else), the App Token, the rate limit, then the path's handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.cinnox import wire
from connectors.cinnox.sandbox import api, control_api, demo
from connectors.cinnox.sandbox.common import ApiError
from connectors.cinnox.sandbox.events import Dispatcher
from connectors.cinnox.sandbox.guards import Faults, RateLimiter
from connectors.cinnox.sandbox.store import Doc, Store

log = logging.getLogger("zapflow.sandbox")
Code = wire.Code
API_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


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


def _error(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers or None)


def authenticate(sandbox: Sandbox, app_id: str, authorization: str | None) -> Doc:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(Code.UNAUTHORIZED, "missing App Token (Authorization: Bearer ...)", 401)
    found = sandbox.store.authenticate(app_id, token.strip())
    if isinstance(found, str):
        raise ApiError(Code.UNAUTHORIZED, found, 401)
    return found


async def cinnox_api(request: Request) -> Response:
    sandbox: Sandbox = request.app.state.sandbox
    app_id = request.path_params["app_id"]
    path = "/" + request.path_params["rest"]
    try:
        fault = sandbox.faults.take(path, request.url.path)
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            canned = fault.reply()
            if canned is not None:
                status, body = canned
                headers = {"Retry-After": "1"} if status == 429 else None
                return JSONResponse(body, status_code=status, headers=headers)
        account = authenticate(sandbox, app_id, request.headers.get("authorization"))
        wait = sandbox.limiter.hit(app_id)
        if wait is not None:
            raise ApiError(
                Code.TOO_MANY_REQUESTS,
                "too many requests",
                429,
                {"Retry-After": RateLimiter.retry_after(wait)},
            )
        handler, params = api.route(request.method, path)
        result = await handler(api.Call(request, sandbox, account, params))
        reply = {"code": int(Code.OK), **result}
        if fault is not None and fault.changes:
            reply = fault.change(reply)
        return JSONResponse(reply)
    except ApiError as exc:
        return _error(exc)
    except Exception:
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse(
            {"code": int(Code.BAD_RESPONSE_FROM_SERVICE), "message": "bad response from service"},
            status_code=500,
        )


async def not_found(request: Request) -> Response:
    return _error(
        ApiError(
            Code.METHOD_NOT_FOUND, f"method not found: {request.method} {request.url.path}", 404
        )
    )


def create_app(config: SandboxConfig | None = None) -> Starlette:
    """The sandbox as an ASGI app; its state is ``app.state.sandbox``."""
    sandbox = Sandbox(config or SandboxConfig())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await sandbox.shutdown()

    app = Starlette(
        routes=[
            Route("/v1/api/apps/{app_id}/{rest:path}", cinnox_api, methods=API_METHODS),
            *control_api.routes(),
            Route("/{path:path}", not_found, methods=API_METHODS),
        ],
        lifespan=lifespan,
    )
    app.state.sandbox = sandbox
    return app
