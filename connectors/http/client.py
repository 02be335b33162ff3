"""Sending a step's HTTP request: credentials from the connection, redirects followed without
leaking them, the answer read into a step output, failures turned into the engine's errors.

Transient failures raise ``RetryableError`` so the step's retry policy applies: timeouts,
connection errors, HTTP 5xx, 408 and 429 (a 429 or 503 carries the wait its ``Retry-After``
asks for). Other 4xx raise ``PermanentError`` naming the status and the start of the answer; a
401 to a request that carried a connection's credentials raises ``AuthError``. Messages name the
URL without its query, and neither messages nor outputs carry a connection's secrets: any that
an answer echoes back are masked.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any
from urllib.parse import quote, quote_plus

import httpx

from connectors._clients import POOL_LIMITS, ClientPool, cheap_idle_checks, http_url, retry_after
from connectors._errors import AuthError, PermanentError, RetryableError
from connectors.http.connection import HttpConnection

MAX_REDIRECTS = 10
MAX_BODY_BYTES = 10 * 1024 * 1024
CLIP = 500
MASK = "********"
USER_AGENT = "zapflow-http"
RETRY_AFTER_STATUSES = (429, 503)

_clients = ClientPool()


def _new_client() -> httpx.AsyncClient:
    # One pooled client serves every zap and connection, so it keeps no cookies: a cookie one
    # zap's answer sets must not ride along on another zap's request.
    no_cookies = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    client = httpx.AsyncClient(
        cookies=no_cookies,
        headers={"User-Agent": USER_AGENT},
        follow_redirects=False,  # followed by _exchange, which drops credentials off-origin
        limits=POOL_LIMITS,
    )
    return cheap_idle_checks(client)


async def close_all() -> None:
    """Close the pooled clients of the running loop (tests, shutdown)."""
    await _clients.close_all()


@dataclass(frozen=True)
class Outgoing:
    """One request as a step describes it; ``body`` holds httpx's json=, data= or content=."""

    method: str
    url: str
    timeout: float
    headers: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)
    body: Mapping[str, Any] = field(default_factory=dict)
    follow_redirects: bool = True


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: Any
    url: str
    elapsed_ms: float


MIN_SECRET = 4
"""Shorter values are not masked: masking `abc` everywhere would garble answers, and a secret
that short protects nothing anyway."""


def secret_forms(secret: str) -> set[str]:
    """The forms in which a peer may echo ``secret``: as given, URL-encoded (``quote`` and
    ``quote_plus``), base64 (standard and URL-safe, with and without padding) and hex; case is
    handled by the masker. A peer that echoes a credential rarely does so verbatim."""
    raw = secret.encode()
    forms = {secret, quote(secret, safe=""), quote_plus(secret), raw.hex()}
    for encoded in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()):
        forms.update({encoded, encoded.rstrip("=")})
    return {f for f in forms if len(f) >= MIN_SECRET}


class _Masker:
    """Replaces a connection's secrets wherever an answer or a message shows them: in any
    letter case and in the encoded forms ``secret_forms`` lists."""

    def __init__(self, secrets: list[str]) -> None:
        forms = {f for s in secrets for f in secret_forms(s)}
        self.secrets = sorted(forms, key=len, reverse=True)
        self.pattern = (
            re.compile("|".join(map(re.escape, self.secrets)), re.IGNORECASE)
            if self.secrets
            else None
        )

    def text(self, text: str) -> str:
        return self.pattern.sub(MASK, text) if self.pattern is not None else text

    def value(self, value: Any) -> Any:
        if not self.secrets:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, dict):
            return {self.text(str(k)): self.value(v) for k, v in value.items()}
        return value


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def _bare(url: httpx.URL) -> str:
    """``scheme://host/path``: the query may carry values that have no place in logs."""
    return str(url.copy_with(query=None, fragment=None))


def _described(method: str, url: httpx.URL) -> str:
    return f"{method} {_bare(url)}"


def target(url: str, conn: HttpConnection | None) -> httpx.URL:
    """The URL to call: ``url`` itself, or a path joined to the connection's ``base_url``.

    A connection with credentials and a base URL sends them to that origin only.
    """
    base = conn.base_url if conn is not None else ""
    if url.startswith("/") and not base:
        raise PermanentError(
            f"url {url!r} is a path: give a full URL (https://…), or a connection that has "
            "a base_url"
        )
    try:
        absolute = http_url(base.rstrip("/") + url if url.startswith("/") else url, "url")
    except ValueError as exc:
        raise PermanentError(str(exc)) from None
    if url.startswith("/"):
        return absolute
    if conn is not None and base and conn.credentials():
        allowed = http_url(base, "base_url")
        if _origin(absolute) != _origin(allowed):
            raise PermanentError(
                f"{_bare(absolute)} is outside the connection's base_url "
                f"{allowed}: its credentials are sent there only. Give a path, or use another "
                "connection (or none) for this URL"
            )
    return absolute


async def send(
    out: Outgoing,
    conn: HttpConnection | None,
    *,
    connection_name: str | None = None,
    fail_on_error: bool = True,
) -> Answer:
    """Send one request and read its answer; raise the error class a failure calls for."""
    url = target(out.url, conn)
    if out.params:  # added to the URL's own query (httpx's params= would replace it)
        url = url.copy_merge_params(dict(out.params))
    credentials = conn.credentials() if conn is not None else {}
    masker = _Masker(conn.secrets() if conn is not None else [])
    what = _described(out.method, url)
    headers = httpx.Headers(credentials)
    headers.update(out.headers)  # a header the step sets itself wins, whatever its case
    client = _clients.get("http", _new_client)
    request = client.build_request(
        out.method,
        url,
        headers=headers,
        timeout=httpx.Timeout(out.timeout),
        **out.body,
    )
    started = time.perf_counter()
    try:
        async with asyncio.timeout(out.timeout):
            reply, raw = await _exchange(client, request, out.follow_redirects, credentials, what)
    except (TimeoutError, httpx.TimeoutException):
        raise RetryableError(f"{what} did not answer within {out.timeout:g} s") from None
    except httpx.UnsupportedProtocol as exc:
        raise PermanentError(f"{what} was redirected to a URL that is not http(s): {exc}") from None
    except httpx.TransportError as exc:
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise RetryableError(masker.text(f"could not reach {what} ({detail})")) from None
    answer = Answer(
        status=reply.status_code,
        headers=masker.value(dict(reply.headers.items())),
        body=masker.value(_parsed(reply, raw)),
        url=masker.text(str(reply.url)),
        elapsed_ms=round((time.perf_counter() - started) * 1000, 1),
    )
    if fail_on_error and answer.status >= 400:
        raise _failure(answer, reply, what, connection_name if credentials else None)
    return answer


async def _exchange(
    client: httpx.AsyncClient,
    request: httpx.Request,
    follow: bool,
    credentials: Mapping[str, str],
    what: str,
) -> tuple[httpx.Response, bytes]:
    """The final answer and its body, following redirects when asked.

    httpx itself drops only ``Authorization`` off-origin; an API key header must go too.
    """
    for _ in range(MAX_REDIRECTS + 1):
        reply = await client.send(request, stream=True, follow_redirects=False)
        try:
            hop = reply.next_request if follow else None
            if hop is None:
                return reply, await _read(reply, what)
        finally:
            await reply.aclose()
        if _origin(hop.url) != _origin(request.url):
            for name in credentials:
                hop.headers.pop(name, None)
        request = hop
    raise PermanentError(f"{what} was redirected more than {MAX_REDIRECTS} times")


async def _read(reply: httpx.Response, what: str) -> bytes:
    raw = bytearray()
    async for chunk in reply.aiter_bytes():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise PermanentError(
                f"{what} answered with more than {MAX_BODY_BYTES // 2**20} MB, more than a "
                "step output may hold"
            )
    return bytes(raw)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _parsed(reply: httpx.Response, raw: bytes) -> Any:
    """Parsed JSON when the answer says it is JSON (and is), else text; None when empty."""
    if not raw:
        return None
    text = raw.decode(reply.encoding or "utf-8", errors="replace")
    if _is_json(reply.headers.get("content-type", "")):
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


def _clip(body: Any) -> str:
    if body is None:
        return "(no body)"
    text = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= CLIP else text[:CLIP] + "…"


def _failure(
    answer: Answer, reply: httpx.Response, what: str, connection_name: str | None
) -> Exception:
    """The error for a 4xx or 5xx answer (its body is already masked)."""
    status = f"HTTP {answer.status}" + (f" {reply.reason_phrase}" if reply.reason_phrase else "")
    message = f"{what} answered {status}: {_clip(answer.body)}"
    if answer.status >= 500 or answer.status in (408, 429):
        wait = None
        if answer.status in RETRY_AFTER_STATUSES:
            wait = retry_after(reply.headers.get("Retry-After"))
        if wait is not None:
            message += f" (asks to retry after {wait:g} s)"
        return RetryableError(message, retry_after=wait)
    if answer.status == 401 and connection_name is not None:
        return AuthError(
            f"{message}. The credentials of connection {connection_name!r} were refused: "
            f"re-enter them with `zapflow connections rekey http {connection_name}`"
        )
    return PermanentError(message)
