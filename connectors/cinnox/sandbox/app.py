"""The sandbox's ASGI app (Starlette): CINNOX's API under ``/v1/api/apps/{app_id}`` and the
control API under ``/sandbox``.

Every API request goes through, in order: injected faults (as a flaky network or service would
answer, before anything else), the App Token, the rate limit, then the path's handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.cinnox import wire
from connectors.cinnox.sandbox import api, control_api
from connectors.cinnox.sandbox.common import ApiError
from connectors.cinnox.sandbox.guards import RateLimiter
from connectors.cinnox.sandbox.state import Sandbox, SandboxConfig
from connectors.cinnox.sandbox.store import Doc

log = logging.getLogger("zapflow.sandbox")
Code = wire.Code
API_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


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
