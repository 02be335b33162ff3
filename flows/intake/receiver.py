"""The receiver: webhooks in, committed to the inbox, then acknowledged.

Two kinds of hook URL, each carrying an unguessable token (compared in constant time; senders
like CINNOX sign nothing, so the URL is the credential):

- ``POST /hooks/{app}/{connection}/{token}/{channel}`` — an app's deliveries for one connection
  (CINNOX: one URL per event family, set up by ``zapflow cinnox subscribe``); the app's webhook
  adapter turns a delivery into trigger events, or answers a challenge.
- ``POST /hooks/zap/{zap}/{token}`` — a zap's catch hook; optionally Standard Webhooks-signed.

A delivery is answered 2xx only after its events are committed to the inbox (group commit makes
that cheap under load), so an acknowledged event is never lost. Bad input gets a 4xx with a JSON
``{"error": ...}`` that says what is wrong.
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from connectors._contract import WebhookReply
from flows.intake.events import NewEvent, derived_id
from flows.intake.hooks import AppHook, Hooks, ZapHook
from flows.intake.inbox import Inbox
from flows.intake.signatures import SignatureError, verify

__all__ = ["AppHook", "Hooks", "Refused", "ZapHook", "create_app"]

DEFAULT_MAX_BODY = 1024 * 1024


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _event_id(*parts: str | None) -> str:
    if parts[-1] is None:  # nothing identifies the occurrence: never treat it as a duplicate
        return uuid.uuid4().hex
    return derived_id(*parts)


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


async def _read_json(request: Request, max_body: int) -> tuple[bytes, dict[str, Any]]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json" and not kind.endswith("+json"):
        raise Refused(415, f"content-type must be application/json, not {kind or 'missing'}")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_body:
        raise Refused(413, f"body of {length} bytes is over the limit of {max_body}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body:
            raise Refused(413, f"body is over the limit of {max_body} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Refused(400, f"malformed JSON: {exc}") from None
    if not isinstance(body, dict):
        raise Refused(400, f"the body must be a JSON object, not {type(body).__name__}")
    return raw, body


def create_app(
    inbox: Inbox,
    hooks: Callable[[], Hooks],
    *,
    max_body: int = DEFAULT_MAX_BODY,
    on_accept: Callable[[], None] = lambda: None,
    ready: Callable[[], bool] = lambda: True,
) -> FastAPI:
    """The receiver as an ASGI app. ``hooks()`` gives the current hook table; ``on_accept`` is
    called after events are committed (it wakes the dispatcher)."""
    api = FastAPI(
        title="zapflow receiver",
        description="Webhooks in: acknowledged once committed to the inbox.",
        version="1",
    )

    @api.exception_handler(Refused)
    async def refused(_: Request, exc: Refused) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    async def store(events: list[NewEvent]) -> list[bool]:
        fresh = await inbox.put_many(events) if len(events) > 1 else [await inbox.put(events[0])]
        on_accept()
        return fresh

    @api.post("/hooks/zap/{zap_id}/{token}", summary="A zap's catch hook")
    async def catch_hook(zap_id: str, token: str, request: Request) -> JSONResponse:
        hook = hooks().zaps.get(zap_id)
        if hook is None or not _same(token, hook.token):
            raise Refused(404, "no such hook (unknown zap, or wrong token)")
        raw, body = await _read_json(request, max_body)
        delivery = request.headers.get("webhook-id") or request.headers.get("idempotency-key")
        if hook.secret is not None:
            try:
                delivery = verify(hook.secret, request.headers, raw)
            except SignatureError as exc:
                raise Refused(401, f"signature refused: {exc}") from None
        trig = hook.zap.trigger
        event = NewEvent(
            id=_event_id("zap", zap_id, delivery),
            app=trig.app,
            trigger=trig.event,
            payload=body,
            connection=trig.connection,
            zap=zap_id,
        )
        (fresh,) = await store([event])
        return JSONResponse({"accepted": True, "event_id": event.id, "duplicate": not fresh})

    @api.post("/hooks/{app_name}/{connection}/{token}/{channel}", summary="An app's deliveries")
    async def app_hook(
        app_name: str, connection: str, token: str, channel: str, request: Request
    ) -> JSONResponse:
        hook = hooks().apps.get((app_name, connection))
        if hook is None or not _same(token, hook.token):
            raise Refused(404, "no such hook (unknown app or connection, or wrong token)")
        _, body = await _read_json(request, max_body)
        assert hook.app.webhook is not None
        try:
            result = hook.app.webhook(channel, body)
        except ValueError as exc:
            raise Refused(
                422, f"not a {hook.app.title} event this hook understands: {exc}"
            ) from None
        if isinstance(result, WebhookReply):
            return JSONResponse(result.body, status_code=result.status)
        events = [
            NewEvent(
                id=_event_id(app_name, connection, item.key),
                app=app_name,
                trigger=item.trigger,
                payload=item.payload,
                connection=connection,
            )
            for item in result
        ]
        if events:
            await store(events)
        return JSONResponse({"code": 0, "accepted": len(events)})

    @api.get("/healthz", summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz", summary="Ready to accept: inbox writable, dispatcher running")
    async def readyz() -> JSONResponse:
        try:
            counts = await inbox.counts()
        except Exception as exc:
            return JSONResponse({"ready": False, "error": f"inbox: {exc}"}, status_code=503)
        if not ready():
            return JSONResponse({"ready": False, "error": "dispatcher not running"}, 503)
        return JSONResponse({"ready": True, "inbox": counts})

    return api
