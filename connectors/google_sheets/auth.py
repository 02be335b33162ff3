"""Access tokens for a service account: the OAuth 2.0 JWT-bearer flow (RFC 7523).

A JWT naming the account, the Sheets scope and the token URI is signed with the account's key
(RS256) and exchanged at the token URI for an access token, which is kept (per account, in
this process) until a minute before it expires. Neither the key nor a token reaches a message.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from dataclasses import dataclass

import httpx

from connectors._clients import ClientPool, retry_after
from connectors._errors import AuthError, PermanentError, RetryableError
from connectors.google_sheets.connection import ServiceAccountKey

SCOPE = "https://www.googleapis.com/auth/spreadsheets"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ASSERTION_LIFETIME = 3600
EARLY = 60.0
"""Seconds before its expiry that a token is replaced."""
TIMEOUT = 30.0

clients = ClientPool()


@dataclass(frozen=True)
class _Token:
    value: str
    expires_at: float  # time.monotonic()


_tokens: dict[str, _Token] = {}
_guard = threading.Lock()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def assertion(key: ServiceAccountKey, now: float | None = None) -> str:
    """The signed JWT that asks the token URI for an access token."""
    issued = int(time.time() if now is None else now)
    header = {"alg": "RS256", "typ": "JWT", **({"kid": key.key_id} if key.key_id else {})}
    claims = {
        "iss": key.client_email,
        "scope": SCOPE,
        "aud": key.token_uri,
        "iat": issued,
        "exp": issued + ASSERTION_LIFETIME,
    }
    signing_input = ".".join(
        _b64(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    )
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    signature = key.private_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64(signature)}"


def _cache_key(key: ServiceAccountKey) -> str:
    numbers = key.private_key.private_numbers().public_numbers
    text = f"{key.client_email}|{key.token_uri}|{numbers.n}"
    return hashlib.sha256(text.encode()).hexdigest()


def forget(key: ServiceAccountKey) -> None:
    """Drop the account's token (the API refused it)."""
    with _guard:
        _tokens.pop(_cache_key(key), None)


async def access_token(key: ServiceAccountKey, connection_name: str | None) -> str:
    """A valid access token for the account: the kept one, or a new one."""
    cache_key = _cache_key(key)
    with _guard:
        kept = _tokens.get(cache_key)
    if kept is not None and kept.expires_at - EARLY > time.monotonic():
        return kept.value
    token = await _fetch(key, connection_name)
    with _guard:
        _tokens[cache_key] = token
    return token.value


async def _fetch(key: ServiceAccountKey, connection_name: str | None) -> _Token:
    client = clients.get("google-token", httpx.AsyncClient)
    form = {"grant_type": GRANT_TYPE, "assertion": assertion(key)}
    what = f"the token URI {key.token_uri}"
    started = time.monotonic()
    try:
        reply = await client.post(key.token_uri, data=form, timeout=TIMEOUT)
    except httpx.TimeoutException:
        raise RetryableError(f"{what} did not answer within {TIMEOUT:g} s") from None
    except httpx.TransportError as exc:
        raise RetryableError(f"could not reach {what} ({type(exc).__name__})") from None
    body = _json(reply)
    if reply.status_code >= 400:
        raise _refusal(reply, body, what, key, connection_name)
    value, lifetime = body.get("access_token"), body.get("expires_in", 3600)
    if not isinstance(value, str) or not value or not isinstance(lifetime, int | float):
        raise PermanentError(f"{what} answered without an access_token")
    return _Token(value, started + float(lifetime))


def _json(reply: httpx.Response) -> dict[str, object]:
    try:
        body = reply.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _refusal(
    reply: httpx.Response,
    body: dict[str, object],
    what: str,
    key: ServiceAccountKey,
    connection_name: str | None,
) -> Exception:
    code, detail = body.get("error", ""), body.get("error_description", "")
    message = f"{what} answered HTTP {reply.status_code}: {code or 'no error code'}"
    message += f" ({detail})" if detail else ""
    if reply.status_code >= 500 or reply.status_code == 429:
        wait = retry_after(reply.headers.get("Retry-After"))
        return RetryableError(message, retry_after=wait)
    if reply.status_code in (400, 401, 403):  # invalid_grant, invalid_client, a disabled key
        name = connection_name or "…"
        return AuthError(
            f"{message}. The key of service account {key.client_email} was refused: re-enter "
            f"it with `zapflow connections rekey google_sheets {name}`"
        )
    return PermanentError(message)
