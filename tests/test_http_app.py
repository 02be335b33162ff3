"""The HTTP app over real HTTP against a small service on loopback: what a user relies on when a
request or a webhook goes through, each kind of failure turned into the error class that tells
the engine what to do next, and a connection's secrets kept out of outputs, errors and logs."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from connectors import ActionContext, registry
from connectors._clients import retry_after
from connectors._errors import AuthError, PermanentError, RetryableError
from connectors._loopback import bind, serve_in_thread
from connectors._signatures import SignatureError, verify
from connectors.http import client as http_client
from connectors.http.client import close_all
from connectors.http.connection import HttpConnection
from flows.errors import ZapValidationError
from flows.loader import load_zap_text

TOKEN = "tok-" + "s3cr3t" * 6
PASSWORD = "pa55-" + "w0rd" * 5
API_KEY = "key-" + "k3y" * 8
SIGNING_SECRET = "whsec_" + base64.b64encode(b"zapflow-test-signing-key-32bytes").decode()
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]


# --------------------------------------------------------------------------- the service


@dataclass
class Seen:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes
    header_list: list[tuple[str, str]]
    """Every header line as sent (a repeated header shows twice)."""


@dataclass
class Service:
    """An HTTP service on loopback that records every request and answers as its path says."""

    url: str = ""
    other_origin: str = ""
    """The same server under another host name (localhost), i.e. another origin."""
    seen: list[Seen] = field(default_factory=list)
    attempts: Counter[str] = field(default_factory=Counter)

    def reset(self) -> None:
        self.seen.clear()
        self.attempts.clear()

    def app(self) -> Starlette:
        every = METHODS
        return Starlette(
            routes=[
                Route("/echo", self.echo, methods=every),
                Route("/v1/echo", self.echo, methods=every),
                Route("/status/{code:int}", self.status, methods=every),
                Route("/flaky/{key}", self.flaky, methods=every),
                Route("/slow", self.slow, methods=every),
                Route("/text", self.text, methods=every),
                Route("/not-json", self.not_json, methods=every),
                Route("/empty", self.empty, methods=every),
                Route("/redirect", self.redirect, methods=every),
                Route("/loop", self.loop, methods=every),
                Route("/cookie", self.cookie, methods=every),
                Route("/big", self.big, methods=every),
                Route("/hook", self.hook, methods=["POST"]),
            ]
        )

    async def _record(self, request: Request) -> Seen:
        seen = Seen(
            request.method,
            request.url.path,
            list(request.query_params.multi_items()),
            dict(request.headers),
            await request.body(),
            [(k.decode().lower(), v.decode()) for k, v in request.headers.raw],
        )
        self.seen.append(seen)
        return seen

    def _echo_of(self, seen: Seen) -> dict[str, Any]:
        return {
            "method": seen.method,
            "query": seen.query,
            "headers": seen.headers,
            "body": seen.body.decode(),
        }

    async def echo(self, request: Request) -> Response:
        seen = await self._record(request)
        return JSONResponse(self._echo_of(seen), headers={"X-Served-By": "echo"})

    async def status(self, request: Request) -> Response:
        """`/status/429?retry_after=7&echo=1`: that status, saying what it got when asked."""
        seen = await self._record(request)
        code = request.path_params["code"]
        headers = {}
        if "retry_after" in request.query_params:
            headers["Retry-After"] = request.query_params["retry_after"]
        if "echo" in request.query_params:
            return JSONResponse(self._echo_of(seen), status_code=code, headers=headers)
        text = f"status {code}: " + request.query_params.get("say", "as asked")
        return PlainTextResponse(text, status_code=code, headers=headers)

    async def flaky(self, request: Request) -> Response:
        """Fails `fail` times per key (with `status`, default 503), then answers."""
        await self._record(request)
        key = request.path_params["key"]
        self.attempts[key] += 1
        if self.attempts[key] <= int(request.query_params.get("fail", "0")):
            code = int(request.query_params.get("status", "503"))
            wait = request.query_params.get("retry_after")
            headers = {"Retry-After": wait} if wait else {}
            return PlainTextResponse("busy, try later", status_code=code, headers=headers)
        return JSONResponse({"attempt": self.attempts[key]}, status_code=201)

    async def slow(self, request: Request) -> Response:
        await self._record(request)
        await asyncio.sleep(float(request.query_params.get("seconds", "2")))
        return PlainTextResponse("finally")

    async def text(self, request: Request) -> Response:
        await self._record(request)
        return PlainTextResponse("Hello, 世界")

    async def not_json(self, request: Request) -> Response:
        await self._record(request)
        return Response("{not json", media_type="application/json")

    async def empty(self, request: Request) -> Response:
        await self._record(request)
        return Response(status_code=204)

    async def redirect(self, request: Request) -> Response:
        await self._record(request)
        return RedirectResponse(request.query_params["to"], status_code=302)

    async def loop(self, request: Request) -> Response:
        await self._record(request)
        return RedirectResponse("/loop", status_code=307)

    async def cookie(self, request: Request) -> Response:
        seen = await self._record(request)
        reply = JSONResponse(self._echo_of(seen))
        reply.set_cookie("session", "from-another-zap")
        return reply

    async def big(self, request: Request) -> Response:
        await self._record(request)
        return PlainTextResponse("x" * int(request.query_params["bytes"]))

    async def hook(self, request: Request) -> Response:
        await self._record(request)
        fail = int(request.query_params.get("fail", "0"))
        key = "hook:" + request.headers.get("webhook-id", "")
        self.attempts[key] += 1
        if self.attempts[key] <= fail:
            return PlainTextResponse("receiver down", status_code=502)
        return Response(status_code=204)


@pytest.fixture(scope="module")
def running_service() -> Iterator[Service]:
    service = Service()
    with serve_in_thread(service.app()) as url:
        service.url = url
        service.other_origin = url.replace("127.0.0.1", "localhost")
        yield service


@pytest.fixture
def service(running_service: Service) -> Service:
    running_service.reset()
    return running_service


@pytest.fixture(scope="module", autouse=True)
async def _close_pooled_clients() -> Any:
    yield
    await close_all()


# --------------------------------------------------------------------------- helpers


def context(conn: HttpConnection | None = None, name: str | None = None) -> ActionContext:
    """A step's context; a new event id each time, so each call has its own idempotency key."""
    return ActionContext(
        zap_id="orders",
        step_id="notify",
        run_id="r",
        event_id=uuid.uuid4().hex,
        connection=conn,
        connection_name=name if name is not None else ("api" if conn else None),
    )


async def call(
    name: str,
    data: dict[str, Any],
    conn: HttpConnection | None = None,
    ctx: ActionContext | None = None,
) -> Any:
    """Run ``http.<name>`` as the engine does: validate the input, then run the action."""
    action = registry.action(f"http.{name}")
    out = await action.run(action.input_model.model_validate(data), ctx or context(conn))
    assert isinstance(out, action.output_model)
    return out


def dumped(out: BaseModel) -> dict[str, Any]:
    return out.model_dump(mode="json", by_alias=True)


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


# --------------------------------------------------------------------------- requests


async def test_get_with_query_and_headers_returns_status_headers_and_parsed_json(
    service: Service,
) -> None:
    out = await call(
        "request",
        {
            "url": f"{service.url}/echo?lang=en",
            "query": {"order": 1001, "tag": ["vip", "hk"], "paid": True, "skip": None},
            "headers": {"Accept": "application/json", "X-Request-Number": 7},
        },
    )
    assert out.status == 200
    assert out.headers["x-served-by"] == "echo"
    assert out.headers["content-type"] == "application/json"
    assert out.body["method"] == "GET"
    assert out.body["query"] == [
        ["lang", "en"],
        ["order", "1001"],
        ["tag", "vip"],
        ["tag", "hk"],
        ["paid", "true"],
    ]
    assert out.body["headers"]["x-request-number"] == "7"
    assert out.body["headers"]["user-agent"] == "zapflow-http"
    assert out.url == f"{service.url}/echo?lang=en&order=1001&tag=vip&tag=hk&paid=true"
    assert out.elapsed_ms > 0
    assert json.loads(json.dumps(dumped(out)))  # the output is plain JSON for later steps


@pytest.mark.parametrize("method", METHODS)
async def test_every_method_reaches_the_service(service: Service, method: str) -> None:
    out = await call("request", {"method": method, "url": f"{service.url}/echo"})
    assert out.status == 200
    assert [s.method for s in service.seen] == [method]
    if method == "HEAD":
        assert out.body is None  # a HEAD answer has no body
    else:
        assert out.body["method"] == method


async def test_a_json_body_is_sent_as_json(service: Service) -> None:
    order = {"id": "order-1001", "total": 42.5, "items": [{"sku": "A1", "qty": 2}], "gift": None}
    out = await call("request", {"method": "POST", "url": f"{service.url}/echo", "json": order})
    (seen,) = service.seen
    assert seen.headers["content-type"] == "application/json"
    assert json.loads(seen.body) == order
    assert json.loads(out.body["body"]) == order


async def test_a_yaml_date_in_a_json_body_is_sent_as_iso_text(service: Service) -> None:
    when = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)
    await call("request", {"method": "PUT", "url": f"{service.url}/echo", "json": {"at": when}})
    assert json.loads(service.seen[0].body) == {"at": "2026-11-25T14:30:00Z"}


async def test_a_form_body_is_sent_urlencoded(service: Service) -> None:
    form = {"name": "Chan Tai Man", "tags": ["vip", "hk"], "age": 42, "opt_in": False}
    await call("request", {"method": "POST", "url": f"{service.url}/echo", "form": form})
    (seen,) = service.seen
    assert seen.headers["content-type"] == "application/x-www-form-urlencoded"
    assert seen.body == b"name=Chan+Tai+Man&tags=vip&tags=hk&age=42&opt_in=false"


async def test_a_raw_body_is_sent_as_it_is(service: Service) -> None:
    await call("request", {"method": "PATCH", "url": f"{service.url}/echo", "data": "a,b\n1,2"})
    await call(
        "request",
        {
            "method": "POST",
            "url": f"{service.url}/echo",
            "data": "<order id='1'/>",
            "headers": {"content-type": "application/xml"},
        },
    )
    text, xml = service.seen
    assert (text.body, text.headers["content-type"]) == (b"a,b\n1,2", "text/plain; charset=utf-8")
    assert (xml.body, xml.headers["content-type"]) == (b"<order id='1'/>", "application/xml")


async def test_answers_that_are_not_json_come_back_as_text(service: Service) -> None:
    text = await call("request", {"url": f"{service.url}/text"})
    broken = await call("request", {"url": f"{service.url}/not-json"})
    empty = await call("request", {"method": "DELETE", "url": f"{service.url}/empty"})
    assert text.body == "Hello, 世界"
    assert broken.body == "{not json"
    assert (empty.status, empty.body) == (204, None)


@pytest.mark.parametrize(
    ("given", "header", "value"),
    [
        ({"auth": "none"}, "authorization", None),
        (
            {"auth": "basic", "username": "chan", "password": PASSWORD},
            "authorization",
            basic("chan", PASSWORD),
        ),
        ({"auth": "bearer", "token": TOKEN}, "authorization", f"Bearer {TOKEN}"),
        ({"auth": "api_key", "api_key": API_KEY}, "x-api-key", API_KEY),
        (
            {"auth": "api_key", "api_key": API_KEY, "api_key_header": "X-Acme-Key"},
            "x-acme-key",
            API_KEY,
        ),
    ],
)
async def test_each_auth_kind_sends_its_credentials_and_the_output_masks_them(
    service: Service, given: dict[str, str], header: str, value: str | None
) -> None:
    conn = HttpConnection.model_validate(given)
    out = await call("request", {"url": f"{service.url}/echo"}, conn)
    (seen,) = service.seen
    assert seen.headers.get(header) == value
    if value is not None:
        # the service echoed the credentials back; the step's output shows them masked
        assert out.body["headers"][header] == value.replace(value.split()[-1], "********")
        assert value.split()[-1] not in json.dumps(dumped(out))


async def test_a_secret_echoed_in_another_case_or_encoding_is_masked(service: Service) -> None:
    """Peers echo credentials lowercased, base64- or URL-encoded: each form is masked."""
    import base64
    from urllib.parse import quote

    secret = "Tok/" + "S3cr3t+" * 5
    conn = HttpConnection.model_validate({"auth": "bearer", "token": secret})
    forms = {
        "lower": secret.lower(),
        "upper": secret.upper(),
        "b64": base64.b64encode(secret.encode()).decode(),
        "b64url": base64.urlsafe_b64encode(secret.encode()).decode().rstrip("="),
        "quoted": quote(secret, safe=""),
        "hex": secret.encode().hex(),
    }
    out = await call(
        "request", {"method": "POST", "url": f"{service.url}/echo", "json": forms}, conn
    )
    echoed = json.loads(out.body["body"])
    assert echoed == dict.fromkeys(forms, "********")
    dumped_out = json.dumps(dumped(out))
    for form in forms.values():
        assert form not in dumped_out and form.lower() not in dumped_out.lower()


async def test_a_secret_echoed_inside_json_arrays_is_masked_in_the_output(
    service: Service,
) -> None:
    conn = HttpConnection.model_validate({"auth": "bearer", "token": TOKEN})
    # the service answers the query as a list of [key, value] pairs: the token sits in arrays
    out = await call("request", {"url": f"{service.url}/echo?t={TOKEN}&t=x"}, conn)
    assert out.body["query"] == [["t", "********"], ["t", "x"]]
    assert TOKEN not in json.dumps(dumped(out))


async def test_a_header_the_step_sets_wins_over_the_connections(service: Service) -> None:
    conn = HttpConnection(auth="bearer", token=TOKEN)
    data = {"url": f"{service.url}/echo", "headers": {"authorization": "Token other"}}
    await call("request", data, conn)
    sent = [value for name, value in service.seen[0].header_list if name == "authorization"]
    assert sent == ["Token other"]


async def test_a_path_is_joined_to_the_connections_base_url(service: Service) -> None:
    conn = HttpConnection(auth="bearer", token=TOKEN, base_url=f"{service.url}/v1/")
    out = await call("request", {"url": "/echo", "query": {"page": 2}}, conn)
    assert out.url == f"{service.url}/v1/echo?page=2"
    assert service.seen[0].headers["authorization"] == f"Bearer {TOKEN}"


async def test_a_path_without_a_base_url_is_a_permanent_error(service: Service) -> None:
    with pytest.raises(PermanentError, match="is a path: give a full URL"):
        await call("request", {"url": "/echo"})
    assert service.seen == []


async def test_credentials_go_to_the_base_urls_origin_only(service: Service) -> None:
    """A templated URL (say, from the trigger) cannot carry a connection's token elsewhere."""
    conn = HttpConnection(auth="bearer", token=TOKEN, base_url=service.url)
    with pytest.raises(PermanentError, match="outside the connection's base_url") as info:
        await call("request", {"url": f"{service.other_origin}/echo?x=1"}, conn)
    assert "x=1" not in str(info.value)
    assert service.seen == []
    # a connection with a base_url but no credentials may be used anywhere
    plain = HttpConnection(base_url=service.url)
    assert (await call("request", {"url": f"{service.other_origin}/echo"}, plain)).status == 200


async def test_idempotency_key_is_sent_when_asked_and_stable_for_the_step(
    service: Service,
) -> None:
    ctx = context()
    data = {"method": "POST", "url": f"{service.url}/echo", "send_idempotency_key": True}
    await call("request", data, ctx=ctx)
    await call("request", data, ctx=ctx)  # the same step on the same event: a retry
    await call("request", {**data, "send_idempotency_key": False}, ctx=ctx)
    first, again, without = service.seen
    assert first.headers["idempotency-key"] == ctx.idempotency_key
    assert again.headers["idempotency-key"] == ctx.idempotency_key
    assert "idempotency-key" not in without.headers


def test_idempotency_key_is_refused_for_get() -> None:
    action = registry.action("http.request")
    with pytest.raises(ValidationError, match="send_idempotency_key is for POST"):
        action.input_model.model_validate(
            {"url": "https://example.com", "send_idempotency_key": True}
        )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"url": "ftp://example.com/x"}, "must be an http:// or https:// URL"),
        ({"url": "example.com/orders"}, "or give a path such as /v1/orders"),
        ({"url": "/x", "json": {"a": 1}, "form": {"a": 1}}, "give one body"),
        ({"url": "/x", "method": "TRACE"}, "Input should be 'GET'"),
        ({"url": "/x", "headers": {"Bad Name": "x"}}, "is not a header name"),
        ({"url": "/x", "headers": {"X-A": "a\r\nX-B: b"}}, "may not contain line breaks"),
        ({"url": "/x", "headers": {"X-Name": "陳大文"}}, "ASCII characters only"),
        ({"url": "/x", "timeout": "10m"}, "at most 5 m"),
        ({"url": "/x", "verify": False}, "Extra inputs are not permitted"),
    ],
)
def test_bad_inputs_are_refused_before_any_call(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        registry.action("http.request").input_model.model_validate(data)


# --------------------------------------------------------------------------- failures


async def test_a_4xx_fails_at_once_naming_status_and_body(service: Service) -> None:
    url = f"{service.url}/status/422?say=email+is+invalid&token=abc"
    with pytest.raises(PermanentError) as info:
        await call("request", {"method": "POST", "url": url, "json": {"email": "x"}})
    message = str(info.value)
    assert f"POST {service.url}/status/422 answered HTTP 422 Unprocessable" in message
    assert "status 422: email is invalid" in message
    assert "token=abc" not in message  # the query stays out of messages
    assert not isinstance(info.value, AuthError)


async def test_a_long_error_body_is_clipped(service: Service) -> None:
    with pytest.raises(PermanentError) as info:
        await call("request", {"url": f"{service.url}/status/400?say={'x' * 2000}"})
    assert str(info.value).endswith("…") and len(str(info.value)) < 700


@pytest.mark.parametrize("code", [500, 502, 503, 504, 408])
async def test_5xx_and_408_are_retryable(service: Service, code: int) -> None:
    with pytest.raises(RetryableError, match=f"answered HTTP {code}") as info:
        await call("request", {"url": f"{service.url}/status/{code}"})
    assert info.value.retry_after is None


async def test_429_is_retryable_after_the_wait_it_asks_for(service: Service) -> None:
    with pytest.raises(RetryableError, match=r"HTTP 429 Too Many Requests") as info:
        await call("request", {"url": f"{service.url}/status/429?retry_after=7"})
    assert info.value.retry_after == 7
    assert "asks to retry after 7 s" in str(info.value)


async def test_503_honours_a_retry_after_date(service: Service) -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=90), usegmt=True)
    with pytest.raises(RetryableError) as info:
        await call("request", {"url": f"{service.url}/status/503?retry_after={later}"})
    assert info.value.retry_after is not None and 80 <= info.value.retry_after <= 90


def test_retry_after_reads_seconds_and_dates() -> None:
    now = time.time()
    date = format_datetime(datetime.fromtimestamp(now + 30, UTC), usegmt=True)
    assert retry_after("120") == 120
    assert retry_after(date, now=now) == pytest.approx(30, abs=1)
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0  # in the past: at once
    assert retry_after("soon") is None and retry_after(None) is None and retry_after("nan") is None


async def test_fail_on_error_false_returns_any_answer(service: Service) -> None:
    missing = await call("request", {"url": f"{service.url}/status/404", "fail_on_error": False})
    broken = await call("request", {"url": f"{service.url}/status/500", "fail_on_error": False})
    assert (missing.status, missing.body) == (404, "status 404: as asked")
    assert broken.status == 500


async def test_a_timeout_is_retryable(service: Service) -> None:
    started = time.monotonic()
    with pytest.raises(RetryableError, match=r"GET .*/slow did not answer within 0.3 s"):
        await call("request", {"url": f"{service.url}/slow?seconds=1", "timeout": "300ms"})
    assert time.monotonic() - started < 2


async def test_an_unreachable_service_is_retryable() -> None:
    sock = bind()
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(RetryableError, match=rf"could not reach GET http://127.0.0.1:{port}/x"):
        await call("request", {"url": f"http://127.0.0.1:{port}/x"})


async def test_a_refused_token_is_an_auth_error_that_says_how_to_fix_it(service: Service) -> None:
    conn = HttpConnection(auth="bearer", token=TOKEN)
    with pytest.raises(AuthError) as info:
        await call(
            "request", {"url": f"{service.url}/status/401?echo=1"}, conn, context(conn, "crm")
        )
    message = str(info.value)
    assert "HTTP 401" in message and "`zapflow connections rekey http crm`" in message
    assert "Bearer ********" in message  # the service echoed the token; the message masks it
    assert TOKEN not in message and TOKEN not in repr(info.value)


async def test_a_401_without_a_connection_is_a_plain_permanent_error(service: Service) -> None:
    with pytest.raises(PermanentError) as info:
        await call("request", {"url": f"{service.url}/status/401"})
    assert not isinstance(info.value, AuthError)


async def test_an_answer_too_large_for_a_step_output_is_refused(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_client, "MAX_BODY_BYTES", 1000)
    ok = await call("request", {"url": f"{service.url}/big?bytes=1000"})
    assert len(ok.body) == 1000
    with pytest.raises(PermanentError, match="more than a step output may hold"):
        await call("request", {"url": f"{service.url}/big?bytes=1001"})


# --------------------------------------------------------------------------- redirects, cookies


async def test_redirects_are_followed_and_keep_credentials_on_the_same_origin(
    service: Service,
) -> None:
    conn = HttpConnection(auth="api_key", api_key=API_KEY)
    out = await call("request", {"url": f"{service.url}/redirect?to=/echo"}, conn)
    assert out.status == 200 and out.url == f"{service.url}/echo"
    assert [s.path for s in service.seen] == ["/redirect", "/echo"]
    assert service.seen[1].headers["x-api-key"] == API_KEY


@pytest.mark.parametrize(
    "given",
    [
        {"auth": "api_key", "api_key": API_KEY},
        {"auth": "bearer", "token": TOKEN},
        {"auth": "basic", "username": "chan", "password": PASSWORD},
    ],
)
async def test_credentials_never_follow_a_redirect_to_another_origin(
    service: Service, given: dict[str, str]
) -> None:
    conn = HttpConnection.model_validate(given)
    elsewhere = f"{service.other_origin}/echo"
    out = await call("request", {"url": f"{service.url}/redirect?to={elsewhere}"}, conn)
    assert out.url == elsewhere
    first, second = service.seen
    assert {"x-api-key", "authorization"} & set(first.headers)
    assert not {"x-api-key", "authorization"} & set(second.headers)


async def test_redirects_can_be_returned_instead_of_followed(service: Service) -> None:
    out = await call(
        "request", {"url": f"{service.url}/redirect?to=/echo", "follow_redirects": False}
    )
    assert (out.status, out.headers["location"]) == (302, "/echo")
    assert len(service.seen) == 1


async def test_a_redirect_loop_is_a_permanent_error(service: Service) -> None:
    with pytest.raises(PermanentError, match="redirected more than 10 times"):
        await call("request", {"url": f"{service.url}/loop"})
    assert len(service.seen) == 11


async def test_no_cookie_is_kept_between_requests(service: Service) -> None:
    first = await call("request", {"url": f"{service.url}/cookie"})
    assert "session=from-another-zap" in first.headers["set-cookie"]
    await call("request", {"url": f"{service.url}/echo"})
    assert "cookie" not in service.seen[1].headers


# --------------------------------------------------------------------------- send_webhook


def signer() -> HttpConnection:
    return HttpConnection(signing_secret=SecretStr(SIGNING_SECRET))


async def test_a_webhook_is_signed_the_standard_webhooks_way(service: Service) -> None:
    conn = signer()
    ctx = context(conn)
    out = await call(
        "send_webhook",
        {
            "url": f"{service.url}/hook",
            "event_type": "order.created",
            "data": {"id": "order-1001", "customer": "陳大文", "total": 42.5},
            "headers": {"X-Tenant": "hk"},
        },
        ctx=ctx,
    )
    assert out.status == 204 and out.webhook_id == ctx.idempotency_key
    (seen,) = service.seen
    assert verify(SIGNING_SECRET, seen.headers, seen.body) == ctx.idempotency_key
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["x-tenant"] == "hk"
    event = json.loads(seen.body)
    assert event["type"] == "order.created"
    assert event["data"] == {"id": "order-1001", "customer": "陳大文", "total": 42.5}
    sent_at = datetime.fromisoformat(event["timestamp"])
    assert abs(sent_at.timestamp() - int(seen.headers["webhook-timestamp"])) < 1
    with pytest.raises(SignatureError, match="does not match"):
        verify(SIGNING_SECRET, seen.headers, seen.body.replace(b"42.5", b"425"))


async def test_a_retried_webhook_keeps_its_id_so_receivers_can_drop_duplicates(
    service: Service,
) -> None:
    conn = signer()
    ctx = context(conn)
    data = {"url": f"{service.url}/hook?fail=1", "event_type": "order.paid", "data": {"n": 1}}
    with pytest.raises(RetryableError, match="answered HTTP 502"):
        await call("send_webhook", data, ctx=ctx)
    out = await call("send_webhook", data, ctx=ctx)
    assert out.status == 204
    ids = [s.headers["webhook-id"] for s in service.seen]
    assert ids == [ctx.idempotency_key] * 2
    for seen in service.seen:
        verify(SIGNING_SECRET, seen.headers, seen.body)


async def test_the_signature_headers_cannot_be_overridden(service: Service) -> None:
    data = {
        "url": f"{service.url}/hook",
        "event_type": "x",
        "data": {},
        "headers": {"Webhook-Signature": "v1,forged", "content-type": "text/plain"},
    }
    await call("send_webhook", data, signer())
    (seen,) = service.seen
    verify(SIGNING_SECRET, seen.headers, seen.body)
    assert seen.headers["content-type"] == "application/json"


async def test_a_webhook_needs_a_connection_with_a_signing_secret(service: Service) -> None:
    data = {"url": f"{service.url}/hook", "event_type": "x", "data": {}}
    for conn in (None, HttpConnection(auth="bearer", token=TOKEN)):
        with pytest.raises(PermanentError, match="--set signing_secret=whsec_"):
            await call("send_webhook", data, conn)
    assert service.seen == []


# --------------------------------------------------------------------------- connections


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"auth": "basic", "username": "chan"}, "auth basic needs password"),
        ({"auth": "bearer"}, "auth bearer needs token"),
        ({"auth": "api_key"}, "auth api_key needs api_key"),
        ({"auth": "bearer", "token": "t", "password": "p"}, "auth bearer does not use password"),
        ({"auth": "none", "api_key_header": "X-Key"}, "does not use api_key_header"),
        ({"auth": "api_key", "api_key": "k", "api_key_header": "X Key"}, "not a header name"),
        ({"auth": "oauth"}, "Input should be 'none'"),
        ({"base_url": "api.example.com"}, "base_url must be an http:// or https:// URL"),
        ({"signing_secret": "not-base64"}, "whsec_ followed by base64"),
    ],
)
def test_a_connection_names_what_its_auth_needs(given: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        HttpConnection.model_validate(given)


def test_a_connections_secrets_are_masked_in_its_repr() -> None:
    conn = HttpConnection(auth="basic", username="chan", password=SecretStr(PASSWORD))
    assert PASSWORD not in repr(conn) and PASSWORD not in str(conn.model_dump())


async def test_the_connection_check_calls_the_base_url(service: Service) -> None:
    app = registry.app("http")
    assert app.check is not None
    good = HttpConnection(auth="bearer", token=TOKEN, base_url=f"{service.url}/echo")
    assert await app.check(good, "api") == f"{service.url}/echo answered HTTP 200"
    refused = HttpConnection(auth="bearer", token=TOKEN, base_url=f"{service.url}/status/401")
    with pytest.raises(AuthError, match="refused the credentials"):
        await app.check(refused, "api")
    assert "no base_url" in await app.check(HttpConnection(), "api")


# --------------------------------------------------------------------------- zap files


def zap_text(step: str, *, zap_id: str = "http-zap") -> str:
    return (
        f"zap: {zap_id}\n"
        "trigger:\n  app: builtin\n  event: catch_hook\n"
        "defaults:\n  retry_delay: 0.05s\n  retry_jitter: 0\n"
        f"steps:\n{step}"
    )


def test_an_http_step_needs_no_connection_but_may_name_one() -> None:
    bare = "  - id: call\n    action: http.request\n    input: {url: 'https://example.com'}\n"
    named = bare + "    connection: crm\n"
    assert load_zap_text(zap_text(bare)).steps[0].connection is None  # type: ignore[union-attr]
    assert load_zap_text(zap_text(named)).steps[0].connection == "crm"  # type: ignore[union-attr]


def test_bad_http_steps_are_located_in_the_zap_file() -> None:
    step = (
        "  - id: call\n    action: http.request\n    input:\n"
        "      url: https://example.com\n      json: {a: 1}\n      data: raw\n"
        "  - id: fetch\n    action: http.request\n    input: {url: /x, method: FETCH}\n"
    )
    with pytest.raises(ZapValidationError) as info:
        load_zap_text(zap_text(step), "z.yaml")
    found = {p.path: p for p in info.value.problems}
    assert "give one body, json, form or data; not json and data" in found["steps[0].input"].message
    assert "(got 'FETCH')" in found["steps[1].input.method"].message
    assert found["steps[0].input"].line + 5 == found["steps[1].input.method"].line


# --------------------------------------------------------------------------- real zap runs


def run(zap_yaml: str, payload: dict[str, Any]) -> Any:
    """Run a zap once as a Prefect flow run, with its retries and run history."""
    from flows.compiler import run_with_history
    from flows.events import Event

    zap = load_zap_text(zap_yaml)
    event = Event(app="builtin", trigger="catch_hook", payload=payload)
    return asyncio.run(run_with_history(zap, event)), event


def recorded(flow_run_id: Any, expect_logs: int) -> tuple[dict[str, Any], str]:
    """The run's task runs by name, and everything the server holds about the run as text."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )

    async def read() -> tuple[dict[str, Any], str]:
        async with get_client() as client:
            deadline = time.monotonic() + 30
            while True:
                logs = await client.read_logs(
                    log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
                )
                if len(logs) >= expect_logs or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.3)
            flow_run = await client.read_flow_run(flow_run_id)
            tasks = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            states = [await client.read_task_run_states(t.id) for t in tasks]
        parts = [flow_run.model_dump_json(), *(t.model_dump_json() for t in tasks)]
        parts += [s.model_dump_json() for each in states for s in each]
        return {t.name: t for t in tasks}, json.dumps([*parts, *(log.message for log in logs)])

    return asyncio.run(read())


RETRIED_STEP = """\
  - id: post
    action: http.request
    retries: 3
    input:
      method: POST
      url: "{{ trigger.url }}"
      json: {order: "{{ trigger.id }}"}
      send_idempotency_key: true
"""


@pytest.mark.usefixtures("prefect_api")
def test_a_5xx_is_retried_in_a_zap_run_until_it_succeeds(service: Service) -> None:
    key = uuid.uuid4().hex
    zap_id = f"http-retry-{key[:6]}"
    payload = {"id": "order-1001", "url": f"{service.url}/flaky/{key}?fail=2"}
    state, event = run(zap_text(RETRIED_STEP, zap_id=zap_id), payload)
    assert state.is_completed(), state.message
    assert [s.method for s in service.seen] == ["POST"] * 3
    keys = {s.headers["idempotency-key"] for s in service.seen}
    assert keys == {f"{event.id}:{zap_id}:post"}  # one key: the service sees one request, retried
    assert all(json.loads(s.body) == {"order": "order-1001"} for s in service.seen)
    tasks, _ = recorded(state.state_details.flow_run_id, expect_logs=1)
    assert tasks["post"].run_count == 3 and tasks["post"].state.name == "Completed"


@pytest.mark.usefixtures("prefect_api")
def test_a_429_retry_waits_as_long_as_the_app_asks(service: Service) -> None:
    key = uuid.uuid4().hex
    url = f"{service.url}/flaky/{key}?fail=1&status=429&retry_after=2"
    step = RETRIED_STEP.replace("    retries: 3\n", "    retries: 3\n    retry_delay: 0.05s\n")
    started = time.monotonic()
    state, _ = run(zap_text(step, zap_id=f"http-429-{key[:6]}"), {"id": "o-1", "url": url})
    assert state.is_completed(), state.message
    assert len(service.seen) == 2
    assert time.monotonic() - started >= 2.0  # Retry-After: 2, not the step's 0.05 s


@pytest.mark.usefixtures("prefect_api")
def test_a_4xx_fails_the_zap_run_without_retrying(service: Service) -> None:
    key = uuid.uuid4().hex
    payload = {"id": "order-1002", "url": f"{service.url}/flaky/{key}?fail=5&status=422"}
    state, _ = run(zap_text(RETRIED_STEP, zap_id=f"http-4xx-{key[:6]}"), payload)
    assert state.is_failed()
    assert "HTTP 422" in state.message and "busy, try later" in state.message
    assert len(service.seen) == 1
    tasks, _ = recorded(state.state_details.flow_run_id, expect_logs=1)
    assert tasks["post"].run_count == 1


@pytest.mark.usefixtures("prefect_api")
def test_secrets_never_reach_outputs_errors_or_run_history(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection from the environment; the service echoes the token back, then refuses it.
    The run's parameters, task runs, states and logs hold the rendered input and the output,
    and the token nowhere."""
    from flows import connections

    monkeypatch.setenv("ZAPFLOW_HTTP_CRM_AUTH", "bearer")
    monkeypatch.setenv("ZAPFLOW_HTTP_CRM_TOKEN", TOKEN)
    monkeypatch.setenv("ZAPFLOW_HTTP_CRM_BASE_URL", service.url)
    connections.forget("http", "crm")
    steps = (
        "  - id: look\n    action: http.request\n    connection: crm\n"
        "    input: {url: /echo, query: {order: '{{ trigger.id }}'}}\n"
        "  - id: refused\n    action: http.request\n    connection: crm\n"
        "    input: {url: '/status/401?echo=1'}\n"
    )
    state, _ = run(zap_text(steps, zap_id=f"http-secret-{uuid.uuid4().hex[:6]}"), {"id": "o-9"})
    assert state.is_failed() and "connections rekey http crm" in state.message
    assert service.seen[0].headers["authorization"] == f"Bearer {TOKEN}"  # it was sent …
    tasks, history = recorded(state.state_details.flow_run_id, expect_logs=3)
    assert tasks["refused"].run_count == 1  # an AuthError is not retried
    assert "o-9" in history and "Bearer ********" in history  # … and masked in the output
    assert TOKEN not in history and TOKEN not in state.message


@pytest.mark.usefixtures("prefect_api")
def test_a_connection_stored_with_zapflow_connect_authenticates_requests(
    service: Service,
) -> None:
    """`zapflow connect` asks for every field; the ones this auth does not use are left empty."""
    from typer.testing import CliRunner

    from flows import connections
    from flows.cli import app as cli

    name = f"crm-{uuid.uuid4().hex[:6]}"
    given = {"auth": "basic", "username": "chan", "password": PASSWORD, "base_url": service.url}
    values = {field: given.get(field, "") for field in HttpConnection.model_fields}
    sets = [arg for field, value in values.items() for arg in ("--set", f"{field}={value}")]
    result = CliRunner().invoke(cli, ["connect", "http", name, *sets])
    assert result.exit_code == 0, result.output
    assert f"{service.url} answered HTTP 404" in result.output  # the check called the base_url
    assert PASSWORD not in result.output

    async def use() -> Any:
        conn = await connections.resolve(registry.app("http"), name)
        try:
            return await call("request", {"url": "/echo"}, conn, context(conn, name))
        finally:
            await close_all()

    out = asyncio.run(use())
    assert service.seen[-1].headers["authorization"] == basic("chan", PASSWORD)
    assert out.body["headers"]["authorization"] == "Basic ********"
