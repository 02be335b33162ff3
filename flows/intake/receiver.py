"""The receiver: webhooks in, committed to the inbox, then acknowledged.

Two kinds of hook URL, each carrying an unguessable token (compared in constant time; senders
like CINNOX sign nothing, so the URL is the credential):

- ``POST /hooks/{app}/{connection}/{token}/{channel}`` — an app's deliveries for one connection
  (CINNOX: one URL per event family, set up by ``zapflow cinnox subscribe``); the app's webhook
  adapter turns a delivery into trigger events, or answers a challenge.
- ``POST /hooks/zap/{zap}/{token}`` — a zap's catch hook; optionally Standard Webhooks-signed.

A delivery is answered 2xx only after its events are committed to the inbox (group commit makes
that cheap under load), so an acknowledged event is never lost. Store first, interpret second:
a delivery with a valid token and a JSON object that the app cannot read is committed too, as
*unrecognised* (``flows.intake.unrecognised``), and answered 200. Only a body that is not a JSON
object, too large or without a valid token gets a 4xx, with a JSON ``{"error": ...}`` that
says what is wrong.

A plain Starlette app rather than FastAPI: every acknowledgement is on the hot path, and the
receiver process stays small without FastAPI and pydantic (the OpenAPI description below is
written out, with the request and answer shapes FastAPI could not infer from raw bodies).
"""

from __future__ import annotations

import hmac
import re
import sys
from collections.abc import Awaitable, Callable
from functools import cache
from typing import TYPE_CHECKING, Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from connectors._signatures import SignatureError, verify
from flows import metrics
from flows.events import MAX_DEPTH, Event, TooDeep, check_depth, occurrence_id
from flows.intake import unrecognised
from flows.intake.hooks import CATCH_HOOK, AppHook, Hooks, ZapHook
from flows.intake.inbox import Inbox

if TYPE_CHECKING:
    from connectors._contract import App

__all__ = ["AppHook", "Hooks", "Refused", "ZapHook", "create_app"]

DEFAULT_MAX_BODY = 1024 * 1024


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


_warned: set[tuple[str, ...]] = set()
_VALUES = re.compile(r"'[^']*'|\"[^\"]*\"|\d+")


def warn_unrecognised(app: str, connection: str, channel: str, reason: str) -> None:
    """Say once per kind (app, connection, channel and the reason without its values) that a
    delivery was kept unread: a wrong guess about the sender's format shows up at once, not
    once per delivery."""
    kind = (app, connection, channel, _VALUES.sub("…", reason))
    if kind in _warned:
        return
    _warned.add(kind)
    print(
        f"zapflow receiver: WARNING: kept a {app} delivery on {connection}/{channel} that "
        f"{app} cannot read yet ({reason}). It waits, unrecognised: `zapflow events "
        f"--unrecognised` lists them, `zapflow reprocess --unrecognised --app {app}` runs "
        "their zaps once they can be read. Deliveries like it are kept without this warning.",
        file=sys.stderr,
        flush=True,
    )


@cache
def _app(name: str) -> App:
    """An app with a webhook adapter, imported the first time one of its hooks is called."""
    from connectors import registry

    return registry.load(name)


async def _read_json(
    request: Request, max_body: int, *, any_json: bool = False
) -> tuple[bytes, Any]:
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
        if "depth limit" in str(exc):  # orjson stops at 1024 levels
            raise Refused(
                400, f"the JSON nests arrays and objects more than {MAX_DEPTH} levels deep"
            ) from None
        raise Refused(400, f"malformed JSON: {exc}") from None
    try:
        check_depth(body)
    except TooDeep as exc:
        raise Refused(400, str(exc)) from None
    if not isinstance(body, dict) and not any_json:
        raise Refused(400, f"the body must be a JSON object, not {type(body).__name__}")
    return raw, body


Endpoint = Callable[[Request], Awaitable[Response]]


def _answers_refusals(endpoint: Endpoint) -> Endpoint:
    async def answer(request: Request) -> Response:
        try:
            return await endpoint(request)
        except Refused as exc:
            app = request.path_params.get("app_name", "builtin")
            metrics.DELIVERIES.labels(app, "refused").inc()
            return json_response({"error": exc.message}, exc.status)

    return answer


def create_app(
    inbox: Inbox,
    hooks: Callable[[], Hooks],
    *,
    max_body: int = DEFAULT_MAX_BODY,
    on_accept: Callable[[], None] = lambda: None,
    running: Callable[[], tuple[bool, str]] = lambda: (True, "runs drain"),
) -> Starlette:
    """The receiver as an ASGI app. ``hooks()`` gives the current hook table; ``on_accept`` is
    called after events are committed (it wakes the dispatcher); ``running()`` says whether
    the events accepted are being run, and if not why (for ``/readyz``)."""

    async def store(events: list[Event]) -> list[bool]:
        try:
            fresh = (
                await inbox.put_many(events) if len(events) > 1 else [await inbox.put(events[0])]
            )
        except TooDeep as exc:  # the payload an app read out of a body within the limit
            raise Refused(400, str(exc)) from None
        on_accept()
        for event, is_new in zip(events, fresh, strict=True):
            if is_new:
                metrics.EVENTS_ACCEPTED.labels(event.app).inc()
        return fresh

    @_answers_refusals
    async def catch_hook(request: Request) -> Response:
        zap_id, token = request.path_params["zap_id"], request.path_params["token"]
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
        app_name, trigger = CATCH_HOOK
        event = Event(
            id=occurrence_id("zap", zap_id, delivery),
            app=app_name,
            trigger=trigger,
            payload=body,
            connection=hook.connection,
            zap=zap_id,
        )
        (fresh,) = await store([event])
        metrics.DELIVERIES.labels(app_name, "accepted" if fresh else "duplicate").inc()
        return json_response({"accepted": True, "event_id": event.id, "duplicate": not fresh})

    @_answers_refusals
    async def app_hook(request: Request) -> Response:
        params = request.path_params
        app_name, connection = params["app_name"], params["connection"]
        hook = hooks().apps.get((app_name, connection))
        if hook is None or not _same(params["token"], hook.token):
            raise Refused(404, "no such hook (unknown app or connection, or wrong token)")
        # Any JSON: what an authenticated sender delivers is kept even when it is not the
        # object its app expects (a batch as an array, say).
        _, body = await _read_json(request, max_body, any_json=True)
        owner = _app(app_name)
        assert owner.webhook is not None
        channel = params["channel"]
        try:
            result = owner.webhook(channel, body)
        except Exception as exc:
            # Store first, interpret second: the token says who sent it, so it is kept (and
            # acknowledged) even though the app cannot read it yet; see flows.intake.unrecognised.
            reason = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
            kept = await unrecognised.keep(
                inbox,
                app=app_name,
                connection=connection,
                channel=channel,
                body=body,
                reason=reason,
            )
            warn_unrecognised(app_name, connection, channel, reason)
            metrics.DELIVERIES.labels(app_name, "unrecognised").inc()
            return json_response({"code": 0, "accepted": 0, "unrecognised": kept})
        if not isinstance(result, list):  # a WebhookReply: the app answers the sender itself
            return json_response(result.body, result.status)
        events = [
            Event(
                id=occurrence_id(app_name, connection, item.key),
                app=app_name,
                trigger=item.trigger,
                payload=item.payload,
                connection=connection,
            )
            for item in result
        ]
        fresh = await store(events) if events else []
        outcome = "accepted" if any(fresh) else "duplicate" if fresh else "empty"
        metrics.DELIVERIES.labels(app_name, outcome).inc()
        return json_response({"code": 0, "accepted": len(events)})

    async def healthz(_: Request) -> Response:
        return json_response({"status": "ok"})

    async def accepting() -> dict[str, Any]:
        try:
            return {"ok": True, "inbox": await inbox.counts()}
        except Exception as exc:
            return {"ok": False, "error": f"the inbox cannot be read: {type(exc).__name__}: {exc}"}

    def runs() -> dict[str, Any]:
        ok, reason = running()
        return {"ok": ok, "reason" if ok else "error": reason}

    async def readyz(_: Request) -> Response:
        """Both: deliveries are committed, and the events committed are run."""
        report = {"accepting": await accepting(), "running": runs()}
        failing = [k for k in ("accepting", "running") if not report[k]["ok"]]
        body: dict[str, Any] = {"ready": not failing, **report}
        if failing:
            body["error"] = "; ".join(f"{k}: {report[k]['error']}" for k in failing)
        return json_response(body, 503 if failing else 200)

    async def readyz_accepting(_: Request) -> Response:
        """Deliveries are safe here (what a load balancer in front of receivers asks)."""
        report = await accepting()
        return json_response(report, 200 if report["ok"] else 503)

    async def readyz_running(_: Request) -> Response:
        """The events accepted are being run (Prefect reachable, the dispatcher at work)."""
        report = runs()
        return json_response(report, 200 if report["ok"] else 503)

    async def openapi(_: Request) -> Response:
        return json_response(OPENAPI)

    async def metrics_page(_: Request) -> Response:
        body = await metrics.exposition(inbox.counts, lambda: unrecognised.waiting_count(inbox))
        return Response(body, media_type=metrics.CONTENT_TYPE)

    async def docs(_: Request) -> Response:
        return HTMLResponse(DOCS_PAGE)

    return Starlette(
        routes=[
            Route("/hooks/zap/{zap_id}/{token}", catch_hook, methods=["POST"]),
            Route("/hooks/{app_name}/{connection}/{token}/{channel}", app_hook, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/readyz/accepting", readyz_accepting, methods=["GET"]),
            Route("/readyz/running", readyz_running, methods=["GET"]),
            Route("/metrics", metrics_page, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
            Route("/docs", docs, methods=["GET"]),
        ]
    )


_ERROR = {
    "description": "Refused; nothing was stored",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"error": {"type": "string", "description": "What is wrong"}},
                "required": ["error"],
            }
        }
    },
}
_JSON_BODY = {
    "required": True,
    "description": "A JSON object, at most the receiver's body limit (default 1 MiB)",
    "content": {"application/json": {"schema": {"type": "object"}}},
}


def _path(*names: str) -> list[dict[str, Any]]:
    return [
        {"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names
    ]


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _exactly(**fields: Any) -> dict[str, Any]:
    """An object with exactly these fields (name: JSON type, or a schema), all present."""
    return {
        "type": "object",
        "properties": {
            name: kind if isinstance(kind, dict) else {"type": kind}
            for name, kind in fields.items()
        },
        "required": list(fields),
        "additionalProperties": False,
    }


def _hook_post(
    summary: str,
    description: str,
    parameters: list[str],
    ok: str,
    answer: dict[str, Any],
    *,
    refusals: tuple[int, ...],
) -> dict[str, Any]:
    """A hook URL's OpenAPI path item: POST a JSON object, 200 with ``answer`` (a schema), or
    one of ``refusals`` with ``{"error": ...}``."""
    return {
        "post": {
            "summary": summary,
            "description": description,
            "parameters": _path(*parameters),
            "requestBody": _JSON_BODY,
            "responses": {
                "200": _json(ok, answer),
                **{str(code): _ERROR for code in refusals},
            },
        }
    }


_PART: dict[str, Any] = {
    "type": "object",
    "properties": {
        "ok": {"type": "boolean"},
        "error": {"type": "string"},
        "reason": {"type": "string"},
        "inbox": {"type": "object", "additionalProperties": {"type": "integer"}},
    },
    "required": ["ok"],
}
_READINESS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "ready": {"type": "boolean"},
        "accepting": _PART,
        "running": _PART,
        "error": {"type": "string"},
    },
    "required": ["ready", "accepting", "running"],
}
OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "zapflow receiver",
        "version": "1",
        "description": "Webhooks in: each delivery is acknowledged once committed to the inbox.",
    },
    "paths": {
        "/hooks/zap/{zap_id}/{token}": _hook_post(
            "A zap's catch hook",
            "Any JSON object becomes one event for this zap. A `webhook-id` or `Idempotency-Key` "
            "header identifies the delivery: a redelivery with the same one is acknowledged but "
            "not stored again. A zap with `options.secret_env` accepts only Standard "
            "Webhooks-signed deliveries (`webhook-id`, `webhook-timestamp`, `webhook-signature`).",
            ["zap_id", "token"],
            "Committed to the inbox",
            _exactly(accepted="boolean", event_id="string", duplicate="boolean"),
            refusals=(400, 401, 404, 413, 415),
        ),
        "/hooks/{app_name}/{connection}/{token}/{channel}": _hook_post(
            "An app's deliveries",
            "Deliveries of one app connection (CINNOX: `channel` is the event family "
            "`zapflow cinnox subscribe` registered). The app's adapter answers a URL "
            "verification challenge itself, or turns the delivery into trigger events. A "
            "delivery it cannot read is kept as unrecognised (`unrecognised`: its id), to be "
            "reprocessed with `zapflow reprocess`, and answered 200 all the same.",
            ["app_name", "connection", "token", "channel"],
            "Committed to the inbox (or the app's answer to a challenge)",
            {
                "oneOf": [
                    _exactly(code="integer", accepted="integer"),
                    _exactly(code="integer", accepted="integer", unrecognised="string"),
                    _exactly(
                        code="integer",
                        result=_exactly(challenge="string"),
                    ),
                ],
                "description": "A delivery: how many events it carried were committed (and, "
                "if it was kept unread, the id it is kept under); a URL verification "
                'challenge: CINNOX\'s expected answer, `{"code": 0, "result": '
                '{"challenge": …}}`.',
            },
            refusals=(400, 404, 413, 415),
        ),
        "/healthz": {
            "get": {
                "summary": "The process is up",
                "responses": {"200": _json("Up", {"type": "object"})},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Ready: deliveries are committed (accepting) and run (running)",
                "description": "Both parts, each with `ok` and, when not, `error`; `error` at the "
                "top names the failing part(s). `accepting` carries the inbox's event counts.",
                "responses": {
                    "200": _json("Accepting and running", _READINESS),
                    "503": _json("Not ready, and which part fails", _READINESS),
                },
            }
        },
        "/readyz/accepting": {
            "get": {
                "summary": "Deliveries are committed to the inbox (for load balancers)",
                "description": "200 even while Prefect is down: what is accepted waits and runs "
                "when it is back.",
                "responses": {
                    "200": _json("Accepting, with the inbox's event counts", _PART),
                    "503": _json("The inbox cannot be written", _PART),
                },
            }
        },
        "/readyz/running": {
            "get": {
                "summary": "The events accepted are being run (for monitoring)",
                "responses": {
                    "200": _json("Running", _PART),
                    "503": _json("Not running (Prefect unreachable, dispatcher stopped …)", _PART),
                },
            }
        },
    },
}

DOCS_PAGE = """<!doctype html>
<html><head><title>zapflow receiver</title><meta charset="utf-8">
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css">
</head><body><div id="ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui"});</script>
<noscript><a href="/openapi.json">openapi.json</a></noscript>
</body></html>
"""
