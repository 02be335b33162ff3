"""The control API under ``/sandbox``: what the CINNOX Dashboard would do (accounts), what
CINNOX's users would do (events), and what a tester needs (what was received, deliveries,
faults, reset). No authentication: the sandbox listens on 127.0.0.1 by default.

Errors are ``{"error": message}`` with HTTP 400, 404 or 409.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.cinnox.sandbox import emit
from connectors.cinnox.sandbox import records as r
from connectors.cinnox.sandbox.common import SERVICE_ID, ControlError
from connectors.cinnox.sandbox.store import MAX_ACCOUNTS

if TYPE_CHECKING:
    from connectors.cinnox.sandbox.state import Sandbox

RECEIVED_KINDS = {
    "sms": "sms",
    "im": "im",
    "ims": "im",
    "contact": "contact",
    "contacts": "contact",
}


def _sandbox(request: Request) -> Sandbox:
    sandbox: Sandbox = request.app.state.sandbox
    return sandbox


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        raise ControlError("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ControlError("the body must be a JSON object")
    return body


def _limit(request: Request) -> int:
    try:
        return max(1, min(1000, int(request.query_params.get("limit", "100"))))
    except ValueError:
        raise ControlError("limit must be a number") from None


Endpoint = Callable[[Request], Awaitable[Any]]


def _json(endpoint: Endpoint, status: int = 200) -> Callable[[Request], Awaitable[Response]]:
    async def wrapped(request: Request) -> Response:
        try:
            return JSONResponse(await endpoint(request), status_code=status)
        except ControlError as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)

    return wrapped


# --------------------------------------------------------------------------- status, accounts


async def status(request: Request) -> Any:
    sb = _sandbox(request)
    return {
        "sandbox": "cinnox",
        "baseUrl": sb.base_url(request),
        "serviceId": SERVICE_ID,
        "accounts": len(sb.store.accounts()),
        "maxAccounts": MAX_ACCOUNTS,
        "rateLimit": sb.config.rate_limit,
    }


async def list_accounts(request: Request) -> Any:
    sb = _sandbox(request)
    return [sb.account(a, request) for a in sb.store.accounts()]


async def add_account(request: Request) -> Any:
    sb = _sandbox(request)
    body = await _body(request)
    return sb.account(sb.store.add_account(str(body.get("name") or "")), request)


async def rename_account(request: Request) -> Any:
    sb = _sandbox(request)
    body = await _body(request)
    ref = request.path_params["ref"]
    return sb.account(sb.store.rename_account(ref, str(body.get("name") or "")), request)


async def regenerate_token(request: Request) -> Any:
    sb = _sandbox(request)
    return sb.account(sb.store.regenerate_token(request.path_params["ref"]), request)


async def delete_account(request: Request) -> Any:
    sb = _sandbox(request)
    return sb.account(sb.store.delete_account(request.path_params["ref"]), request)


async def subscriptions(request: Request) -> Any:
    return _sandbox(request).store.subscriptions()


# --------------------------------------------------------------------------- events


async def list_triggers(request: Request) -> Any:
    return emit.triggers()


async def emit_event(request: Request) -> Any:
    sb = _sandbox(request)
    body = await _body(request)
    overrides = body.get("set") or {}
    if not isinstance(overrides, dict):
        raise ControlError('"set" must be an object of event fields')
    app_id = None
    if body.get("account"):
        app_id = sb.store.account(str(body["account"]))["appId"]
    return emit.emit(sb, request.path_params["trigger"], overrides, app_id)


async def deliveries(request: Request) -> Any:
    family = request.query_params.get("family") or None
    return _sandbox(request).store.deliveries(family, _limit(request))


# --------------------------------------------------------------------------- received, data


async def sent(request: Request) -> Any:
    kind = request.query_params.get("kind") or None
    if kind is not None and kind not in RECEIVED_KINDS:
        raise ControlError(f"kind must be one of: {', '.join(sorted(set(RECEIVED_KINDS)))}")
    return _sandbox(request).store.received(RECEIVED_KINDS[kind] if kind else None, _limit(request))


async def data(request: Request) -> Any:
    """The records of one kind (staff, contacts, enquiries, rooms, numbers, labels), to find
    ids to use in zaps; ``?id=`` for one record."""
    plural = request.path_params["kind"]
    if plural not in r.KINDS:
        raise ControlError(f"kind must be one of: {', '.join(r.KINDS)}", 404)
    kind, key = r.KINDS[plural]
    sb = _sandbox(request)
    records = [r.public(x) for x in sb.store.all(kind)]
    wanted = request.query_params.get("id")
    if wanted is not None:
        records = [
            x for x in records if x.get(key) == wanted or x.get("displayCaseNumber") == wanted
        ]
    return records


# --------------------------------------------------------------------------- faults, reset


def _number(body: dict[str, Any], name: str, kind: type) -> Any:
    value = body.get(name)
    if value is None:
        return None
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ControlError(f"{name} must be a number") from None


async def add_fault(request: Request) -> Any:
    body = await _body(request)
    fault = _sandbox(request).faults.add(
        str(body.get("path") or ""),
        code=_number(body, "code", int),
        status=_number(body, "status", int),
        delay=_number(body, "delay", float),
        times=_number(body, "times", int) or 1,
        message=body.get("message"),
        changes=body.get("changes"),
    )
    return fault.__dict__


async def list_faults(request: Request) -> Any:
    return _sandbox(request).faults.list()


async def clear_faults(request: Request) -> Any:
    _sandbox(request).faults.clear()
    return []


async def reset(request: Request) -> Any:
    sb = _sandbox(request)
    body = await _body(request)
    sb.reset(accounts=bool(body.get("accounts")))
    return await status(request)


def routes() -> list[Route]:
    return [
        Route("/sandbox", _json(status), methods=["GET"]),
        Route("/sandbox/accounts", _json(list_accounts), methods=["GET"]),
        Route("/sandbox/accounts", _json(add_account, 201), methods=["POST"]),
        Route("/sandbox/accounts/{ref}", _json(rename_account), methods=["PATCH"]),
        Route("/sandbox/accounts/{ref}", _json(delete_account), methods=["DELETE"]),
        Route("/sandbox/accounts/{ref}/regenerate", _json(regenerate_token), methods=["POST"]),
        Route("/sandbox/subscriptions", _json(subscriptions), methods=["GET"]),
        Route("/sandbox/triggers", _json(list_triggers), methods=["GET"]),
        Route("/sandbox/emit/{trigger}", _json(emit_event), methods=["POST"]),
        Route("/sandbox/sent", _json(sent), methods=["GET"]),
        Route("/sandbox/deliveries", _json(deliveries), methods=["GET"]),
        Route("/sandbox/data/{kind}", _json(data), methods=["GET"]),
        Route("/sandbox/faults", _json(list_faults), methods=["GET"]),
        Route("/sandbox/faults", _json(add_fault, 201), methods=["POST"]),
        Route("/sandbox/faults", _json(clear_faults), methods=["DELETE"]),
        Route("/sandbox/reset", _json(reset), methods=["POST"]),
    ]
