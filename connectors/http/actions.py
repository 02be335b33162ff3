"""The HTTP app's actions: a custom request, and a webhook signed the Standard Webhooks way."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import to_jsonable_python

from connectors._clients import http_url
from connectors._contract import ActionContext
from connectors._errors import AuthError, PermanentError
from connectors._signatures import sign
from connectors._units import Duration
from connectors.http._app import app
from connectors.http.client import Outgoing, send
from connectors.http.connection import HEADER_NAME, HttpConnection

MAX_TIMEOUT = timedelta(minutes=5)
BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")

Scalar = str | int | float | bool
Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]


def _text(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _check_headers(headers: dict[str, Scalar]) -> dict[str, Scalar]:
    for name, value in headers.items():
        if not HEADER_NAME.match(name):
            raise ValueError(f"{name!r} is not a header name (letters, digits, - and _)")
        text = _text(value)
        if "\r" in text or "\n" in text:
            raise ValueError(f"header {name}: a value may not contain line breaks")
        if not text.isascii():
            raise ValueError(
                f"header {name}: a value may hold ASCII characters only (url_encode other text "
                "with builtin.format_text)"
            )
    return headers


def _check_url(url: str) -> str:
    url = url.strip()
    if not url.startswith("/"):
        try:
            http_url(url, "url")
        except ValueError as exc:
            raise ValueError(
                f"{exc}; or give a path such as /v1/orders (joined to the connection's base_url)"
            ) from None
    return url


def _check_timeout(value: timedelta) -> timedelta:
    if not timedelta(0) < value <= MAX_TIMEOUT:
        raise ValueError(f"timeout must be more than 0 and at most {MAX_TIMEOUT.seconds // 60} m")
    return value


Headers = Annotated[dict[str, Scalar], AfterValidator(_check_headers)]
Url = Annotated[str, AfterValidator(_check_url)]
Timeout = Annotated[Duration, AfterValidator(_check_timeout)]

_URL_HELP = (
    "A full http:// or https:// URL, or a path such as /v1/orders joined to the connection's "
    "base_url"
)
_HEADERS_HELP = "Request headers, e.g. {Accept: application/json}; they win over the connection's"
_TIMEOUT_HELP = "Longest the request may take, up to 5m; a request that takes longer is retried"


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RequestInput(_Input):
    method: Method = Field("GET", description="The HTTP method")
    url: Url = Field(description=_URL_HELP, examples=["https://api.example.com/v1/orders"])
    headers: Headers = Field(default_factory=dict, description=_HEADERS_HELP)
    query: dict[str, Scalar | list[Scalar] | None] = Field(
        default_factory=dict,
        description="Query parameters added to the URL; a list repeats the parameter, null "
        "leaves it out",
    )
    json_: Any = Field(
        None,
        alias="json",
        description="A JSON body (any value), sent as application/json. Give at most one of "
        "json, form and data",
    )
    form: dict[str, Scalar | list[Scalar]] | None = Field(
        None, description="A form body, sent as application/x-www-form-urlencoded"
    )
    data: str | None = Field(
        None,
        description="A raw body, sent as it is; set its Content-Type in headers "
        "(default text/plain; charset=utf-8)",
    )
    timeout: Timeout = Field(timedelta(seconds=30), description=_TIMEOUT_HELP)
    fail_on_error: bool = Field(
        True,
        description="Fail the step on a 4xx or 5xx answer (5xx, 408, 429 and timeouts are "
        "retried, other 4xx are not); false: return any answer as the output",
    )
    follow_redirects: bool = Field(
        True,
        description="Follow redirects (up to 10); the connection's credentials never follow "
        "one to another origin",
    )
    send_idempotency_key: bool = Field(
        False,
        description="Send an Idempotency-Key header (POST, PUT, PATCH, DELETE): the same for "
        "every retry and replay of this step on this event, so the service can tell a retry "
        "from a new request",
    )

    @model_validator(mode="after")
    def _one_body(self) -> Self:
        bodies = {"json": self.json_, "form": self.form, "data": self.data}
        given = [name for name, value in bodies.items() if value is not None]
        if len(given) > 1:
            raise ValueError(f"give one body, json, form or data; not {' and '.join(given)}")
        if self.send_idempotency_key and self.method not in BODY_METHODS:
            raise ValueError(
                f"send_idempotency_key is for {', '.join(BODY_METHODS)}, not {self.method}"
            )
        return self

    def body(self) -> dict[str, Any]:
        """The body as httpx takes it."""
        if self.json_ is not None:
            return {"json": to_jsonable_python(self.json_)}
        if self.form is not None:
            return {"data": {k: _form_value(v) for k, v in self.form.items()}}
        if self.data is not None:
            return {"content": self.data.encode()}
        return {}


def _form_value(value: Scalar | list[Scalar]) -> str | list[str]:
    return [_text(v) for v in value] if isinstance(value, list) else _text(value)


class HttpAnswer(BaseModel):
    status: int = Field(description="The answer's HTTP status, e.g. 200", examples=[200])
    headers: dict[str, str] = Field(
        description="The answer's headers, names in lower case",
        examples=[{"content-type": "application/json"}],
    )
    body: Any = Field(
        description="The answer's body: parsed JSON when its content type is JSON, else text; "
        "null when it has none",
        examples=[{"id": 1001, "status": "created"}],
    )
    url: str = Field(
        description="The URL that answered (after redirects)",
        examples=["https://api.example.com/v1/orders"],
    )
    elapsed_ms: float = Field(description="How long the request took, in ms", examples=[182.4])


def _has(headers: dict[str, str], name: str) -> bool:
    return name.lower() in (h.lower() for h in headers)


def _connection(ctx: ActionContext) -> HttpConnection | None:
    conn = ctx.connection
    assert conn is None or isinstance(conn, HttpConnection)
    return conn


@app.action("request", title="Send an HTTP request")
async def request(input: RequestInput, ctx: ActionContext) -> HttpAnswer:
    """Sends one HTTP request (GET, POST, PUT, PATCH, DELETE or HEAD) with the headers, query and
    body you give, authenticated by the step's connection if it has one, and returns the
    answer's status, headers and body (parsed JSON when the answer is JSON).

    A 4xx or 5xx answer fails the step unless `fail_on_error` is false: 5xx, 408 (timeout) and
    429 (too many requests) are retried by the step's policy, as are timeouts and connection
    errors; other 4xx are not, and the error names the status and the start of the answer.
    """
    headers = {name: _text(value) for name, value in input.headers.items()}
    if input.send_idempotency_key and not _has(headers, "Idempotency-Key"):
        headers["Idempotency-Key"] = ctx.idempotency_key
    if input.data is not None and not _has(headers, "Content-Type"):
        headers["Content-Type"] = "text/plain; charset=utf-8"
    out = Outgoing(
        method=input.method,
        url=input.url,
        timeout=input.timeout.total_seconds(),
        headers=headers,
        params={k: v for k, v in input.query.items() if v is not None},
        body=input.body(),
        follow_redirects=input.follow_redirects,
    )
    answer = await send(
        out,
        _connection(ctx),
        connection_name=ctx.connection_name,
        fail_on_error=input.fail_on_error,
    )
    return HttpAnswer(**asdict(answer))


# --------------------------------------------------------------------------- send_webhook


class WebhookInput(_Input):
    url: Url = Field(description=_URL_HELP, examples=["https://hooks.example.com/zapflow"])
    event_type: str = Field(
        min_length=1,
        max_length=200,
        description="The event's type, e.g. order.created: the body's `type`, which receivers "
        "route on",
        examples=["order.created"],
    )
    data: dict[str, Any] = Field(description="The event's data: the body's `data`")
    headers: Headers = Field(default_factory=dict, description=_HEADERS_HELP)
    timeout: Timeout = Field(timedelta(seconds=30), description=_TIMEOUT_HELP)


class WebhookAnswer(HttpAnswer):
    webhook_id: str = Field(
        description="The delivery's webhook-id: the same on every retry and replay of this "
        "step on this event, so the receiver can drop duplicates",
        examples=["3f2a9c0e1b7d4c5a:order-follow-up:notify"],
    )


def _signing_secret(conn: HttpConnection | None) -> str:
    secret = conn.signing_secret.get_secret_value() if conn is not None else ""
    if not secret:
        raise PermanentError(
            "http.send_webhook signs every delivery with its connection's signing_secret: give "
            "the step a connection that has one (`zapflow connect http NAME --set "
            "signing_secret=whsec_...`)"
        )
    return secret


@app.action("send_webhook", title="Send a signed webhook")
async def send_webhook(input: WebhookInput, ctx: ActionContext) -> WebhookAnswer:
    """POSTs an event to a webhook URL, signed the Standard Webhooks way
    (https://www.standardwebhooks.com) with the connection's `signing_secret`.

    The body is `{"type": event_type, "timestamp": ISO 8601, "data": data}`; the headers
    `webhook-id`, `webhook-timestamp` and `webhook-signature` (`v1,<base64 HMAC-SHA256>` of
    `id.timestamp.body`) let the receiver check it. The webhook-id stays the same when the step
    is retried or replayed for the same event, so the receiver can drop duplicates. Failures
    are retried or not as for `http.request`.
    """
    conn = _connection(ctx)
    secret = _signing_secret(conn)
    webhook_id = ctx.idempotency_key
    stamp = int(time.time())
    event = {
        "type": input.event_type,
        "timestamp": datetime.fromtimestamp(stamp, UTC).isoformat().replace("+00:00", "Z"),
        "data": to_jsonable_python(input.data),
    }
    body = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
    signed = {
        "Content-Type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign(secret, webhook_id, stamp, body),
    }
    headers = {
        name: _text(value)
        for name, value in input.headers.items()
        if not _has(signed, name)  # the signature's own headers cannot be overridden
    }
    out = Outgoing(
        method="POST",
        url=input.url,
        timeout=input.timeout.total_seconds(),
        headers=headers | signed,
        body={"content": body},
    )
    answer = await send(out, conn, connection_name=ctx.connection_name)
    return WebhookAnswer(**asdict(answer), webhook_id=webhook_id)


# --------------------------------------------------------------------------- connection check


@app.connection_check
async def check(conn: HttpConnection, name: str) -> str:
    """GET the base_url with the credentials: only a 401 means they are wrong."""
    if not conn.base_url:
        return "no base_url to call; the connection is used as given"
    answer = await send(Outgoing("GET", conn.base_url, timeout=10.0), conn, fail_on_error=False)
    if answer.status == 401 and conn.credentials():
        raise AuthError(f"{conn.base_url} refused the credentials (HTTP 401)")
    return f"{conn.base_url} answered HTTP {answer.status}"
