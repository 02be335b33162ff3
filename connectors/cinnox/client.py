"""The CINNOX API client: one ``httpx.AsyncClient`` per account, typed errors, a rate limiter.

Errors say what to do next. Transient ones (timeouts, resets, HTTP 5xx, 6451001 bad response
from service, 6451010 / HTTP 429 too many requests) raise ``RetryableError`` so the step's retry
policy applies; CINNOX refusing the request (6451000 parameter error, 3000203, 3000205 …) raises
``PermanentError`` with CINNOX's message; a rejected token raises ``AuthError`` telling the user
to re-enter the credentials. The token travels only in the Authorization header: never in URLs,
messages or ``repr``.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import httpx

from connectors._clients import POOL_LIMITS, ClientPool, cheap_idle_checks, retry_after
from connectors._errors import AuthError, PermanentError, RetryableError
from connectors._rates import limiter
from connectors.cinnox import wire
from connectors.cinnox.connection import CinnoxConnection

TIMEOUT = httpx.Timeout(15.0, connect=5.0)


_clients = ClientPool()


def _key(conn: CinnoxConnection) -> str:
    token = conn.app_token.get_secret_value().encode()
    return f"{conn.base_url}|{conn.app_id}|{hashlib.sha256(token).hexdigest()[:16]}"


class CinnoxClient:
    """Calls to one CINNOX account."""

    def __init__(self, conn: CinnoxConnection, *, connection_name: str = "") -> None:
        self.conn, self.name = conn, connection_name
        # CINNOX counts calls per service account (App ID), whichever connection names it.
        self.limiter = limiter(f"cinnox:{conn.app_id}", conn.rate_limit)

    def __repr__(self) -> str:
        return f"CinnoxClient(app_id={self.conn.app_id!r}, base_url={self.conn.base_url!r})"

    @property
    def prefix(self) -> str:
        return self.conn.base_url.rstrip("/") + wire.API_PREFIX.format(app_id=self.conn.app_id)

    def _http(self) -> httpx.AsyncClient:
        """The pooled client of this account (connections are reused per account)."""
        return _clients.get(
            _key(self.conn),
            lambda: cheap_idle_checks(
                httpx.AsyncClient(
                    timeout=TIMEOUT,
                    limits=POOL_LIMITS,
                    headers={
                        "Authorization": f"Bearer {self.conn.app_token.get_secret_value()}",
                        "Accept": "application/json",
                        "User-Agent": "zapflow-cinnox",
                    },
                )
            ),
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """One API call; returns the reply's fields (``code`` included) or raises a typed error."""
        await self.limiter.wait()
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        what = f"{method} {path}"
        try:
            reply = await self._http().request(
                method, self.prefix + path, params=params, json=json, headers=headers
            )
        except httpx.TimeoutException:
            raise RetryableError(f"CINNOX did not answer {what} in time") from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            # A Base URL that cannot be called (no scheme, a typo) fails the same way every try.
            raise PermanentError(
                f"the Base URL of connection {self.name or self.conn.app_id!r} cannot be "
                f"called ({exc}). {self._fix_command()}"
            ) from None
        except httpx.TransportError as exc:
            raise RetryableError(
                f"could not reach CINNOX for {what}: {type(exc).__name__}"
            ) from None
        return self._read(reply, what)

    def _fix_command(self, *, token: bool = False) -> str:
        """How the user corrects this connection: where it comes from decides."""
        name = self.name or "<name>"
        prefix = f"ZAPFLOW_CINNOX_{name}_".upper().replace("-", "_")
        variable = prefix + ("APP_TOKEN" if token else "BASE_URL")
        if self.name and any(k.startswith(prefix) for k in os.environ):
            what = "the new App Token" if token else "the Base URL with its https:// scheme"
            return f"This connection comes from the environment: set {variable} to {what}."
        if token:
            return f"Re-enter the credentials with `zapflow connections rekey cinnox {name}`."
        return f"Correct it with `zapflow connect cinnox {name} --replace`."

    def _read(self, reply: httpx.Response, what: str) -> dict[str, Any]:
        try:
            body = reply.json()
        except ValueError:
            body = None
        code = body.get("code") if isinstance(body, dict) else None
        message = str(body.get("message", "")) if isinstance(body, dict) else ""
        if reply.status_code in (401, 403) or code == wire.Code.UNAUTHORIZED:
            raise AuthError(
                f"CINNOX rejected the App Token of connection {self.name or self.conn.app_id!r} "
                f"(App ID {self.conn.app_id}): it was regenerated, or its Zapier account was "
                f"deleted in the CINNOX Dashboard. {self._fix_command(token=True)}"
            )
        if reply.status_code == 429 or code == wire.Code.TOO_MANY_REQUESTS:
            wait = retry_after(reply.headers.get("Retry-After"))
            raise RetryableError(f"CINNOX: too many requests ({what})", retry_after=wait)
        if reply.status_code >= 500 or code == wire.Code.BAD_RESPONSE_FROM_SERVICE:
            detail = message or f"HTTP {reply.status_code}"
            raise RetryableError(f"CINNOX could not serve {what} for now: {detail}")
        if not isinstance(body, dict) or code is None:
            raise RetryableError(f"CINNOX answered {what} with something that is not its JSON")
        if code not in wire.SUCCESS_CODES:
            raise PermanentError(f"CINNOX refused {what} ({code}): {message or 'no message'}")
        return body


async def close_all() -> None:
    """Close the pooled clients of the running loop (tests, shutdown)."""
    await _clients.close_all()
