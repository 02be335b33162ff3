"""Posting a JSON message to a chat webhook (Slack incoming webhooks, Teams and Workflows
webhooks), whose URL is itself the secret: messages show it as ``https://host/…`` only.

Timeouts, connection errors, 408, 429 and 5xx raise ``RetryableError`` (a 429's or 503's
``Retry-After`` is kept); any other answer goes back to the app, which reads its own errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr

from connectors._clients import ClientPool, retry_after
from connectors._errors import PermanentError, RetryableError

CLIP = 300
_clients = ClientPool()


def checked_url(url: str, what: str) -> str:
    """``url`` if it is an absolute http(s) URL; ValueError that does not repeat it."""
    url = url.strip()
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"{what} must be an http:// or https:// URL with a host")
    return url


def step_url(own: SecretStr | None, connection: SecretStr | None, action: str) -> SecretStr:
    """The webhook URL a step posts to: its own ``webhook_url``, else its connection's."""
    url = own or connection
    if url is None or not url.get_secret_value():
        raise PermanentError(
            f"{action} needs a webhook URL: give the step a connection that has a webhook_url, "
            "or the step's own webhook_url"
        )
    try:
        checked_url(url.get_secret_value(), "webhook_url")
    except ValueError as exc:
        raise PermanentError(str(exc)) from None
    return url


def shown(url: str) -> str:
    """The URL without the path and query that make it secret."""
    parsed = httpx.URL(url)
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}/…"


@dataclass(frozen=True)
class Reply:
    status: int
    text: str

    @property
    def clipped(self) -> str:
        text = " ".join(self.text.split()) or "(no body)"
        return text if len(text) <= CLIP else text[:CLIP] + "…"


def client(key: str) -> httpx.AsyncClient:
    """The running loop's pooled client for ``key`` (one per app)."""
    return _clients.get(
        key, lambda: httpx.AsyncClient(headers={"User-Agent": "zapflow"}, follow_redirects=False)
    )


async def close_all() -> None:
    """Close the pooled clients of the running loop (tests, shutdown)."""
    await _clients.close_all()


async def post_json(
    url: SecretStr, payload: dict[str, Any], timeout: float, who: str, key: str
) -> Reply:
    """POST ``payload``; the answer, unless it is one worth retrying."""
    secret = url.get_secret_value()
    where = f"{who} ({shown(secret)})"
    try:
        reply = await client(key).post(secret, json=payload, timeout=timeout)
    except httpx.TimeoutException:
        raise RetryableError(f"{where} did not answer within {timeout:g} s") from None
    except httpx.TransportError as exc:
        detail = str(exc).replace(secret, shown(secret))
        raise RetryableError(f"could not reach {where}: {type(exc).__name__} {detail}") from None
    answer = Reply(reply.status_code, reply.text)
    if reply.status_code >= 500 or reply.status_code in (408, 429):
        raise transient(f"{where} answered HTTP {reply.status_code}: {answer.clipped}", reply)
    return answer


def transient(message: str, reply: httpx.Response) -> RetryableError:
    """A retryable error that keeps the wait a 429's or 503's Retry-After asks for."""
    wait = None
    if reply.status_code in (429, 503):
        wait = retry_after(reply.headers.get("Retry-After"))
    if wait is not None:
        message += f" (asks to retry after {wait:g} s)"
    return RetryableError(message, retry_after=wait)
