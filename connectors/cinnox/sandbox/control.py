"""A client of a running sandbox's control API (``/sandbox/...``), for the CLI, tests and
users' scripts."""

from __future__ import annotations

import time
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8765"
SETTLED = ("delivered", "failed", "cancelled")


class SandboxNotRunning(Exception):
    """Nothing answers at the sandbox's URL."""


class SandboxError(Exception):
    """The control API refused a request."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class SandboxControl:
    """Accounts, events, what the sandbox received, deliveries, faults and reset."""

    def __init__(self, url: str = DEFAULT_URL, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, timeout=timeout)

    def __enter__(self) -> SandboxControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            reply = self.http.request(method, "/sandbox" + path, **kwargs)
        except httpx.TransportError as exc:
            raise SandboxNotRunning(
                f"no sandbox answers at {self.url} ({type(exc).__name__}); start one with "
                "`zapflow sandbox serve` or point --url / ZAPFLOW_SANDBOX_URL at it"
            ) from None
        try:
            body = reply.json()
        except ValueError:
            body = None
        if reply.is_error:
            message = body.get("error") if isinstance(body, dict) else None
            raise SandboxError(message or f"HTTP {reply.status_code}", reply.status_code)
        return body

    # ---------------------------------------------------------------- status, accounts

    def status(self) -> dict[str, Any]:
        return self.call("GET", "")

    def accounts(self) -> list[dict[str, Any]]:
        """Each with ``appId``, ``name``, ``appToken``, ``baseUrl``."""
        return self.call("GET", "/accounts")

    def add_account(self, name: str) -> dict[str, Any]:
        return self.call("POST", "/accounts", json={"name": name})

    def rename_account(self, ref: str, name: str) -> dict[str, Any]:
        return self.call("PATCH", f"/accounts/{ref}", json={"name": name})

    def regenerate_token(self, ref: str) -> dict[str, Any]:
        return self.call("POST", f"/accounts/{ref}/regenerate")

    def delete_account(self, ref: str) -> dict[str, Any]:
        return self.call("DELETE", f"/accounts/{ref}")

    def subscriptions(self) -> list[dict[str, Any]]:
        return self.call("GET", "/subscriptions")

    # ---------------------------------------------------------------- events

    def triggers(self) -> list[dict[str, str]]:
        return self.call("GET", "/triggers")

    def emit(
        self, trigger: str, fields: dict[str, Any] | None = None, *, account: str | None = None
    ) -> dict[str, Any]:
        """Emit a trigger's event; ``fields`` override the event's fields. Returns
        ``{trigger, family, event, deliveries}`` (delivery ids; they run in the background)."""
        body = {"set": fields or {}, "account": account}
        return self.call("POST", f"/emit/{trigger}", json=body)

    def deliveries(self, family: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first."""
        params: dict[str, Any] = {"limit": limit}
        if family:
            params["family"] = family
        return self.call("GET", "/deliveries", params=params)

    def wait_for_deliveries(
        self, count: int = 1, *, family: str | None = None, timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """Wait until at least ``count`` deliveries (of ``family``) have settled (delivered,
        failed or cancelled); returns them, newest first."""
        deadline = time.monotonic() + timeout
        while True:
            done = [d for d in self.deliveries(family) if d["state"] in SETTLED]
            if len(done) >= count:
                return done
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(done)} of {count} deliveries settled in {timeout} s")
            time.sleep(0.02)

    # ---------------------------------------------------------------- received, data

    def sent(self, kind: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """What clients sent: ``sms``, ``im`` or ``contact`` records (all if None), newest
        first, each with ``request`` (the body received) and ``result``."""
        params: dict[str, Any] = {"limit": limit}
        if kind:
            params["kind"] = kind
        return self.call("GET", "/sent", params=params)

    def data(self, kind: str, id: str | None = None) -> list[dict[str, Any]]:
        """Records of the service: staff, contacts, enquiries, rooms, numbers, labels."""
        params = {"id": id} if id else None
        return self.call("GET", f"/data/{kind}", params=params)

    # ---------------------------------------------------------------- faults, reset

    def add_fault(
        self,
        path: str,
        *,
        code: int | None = None,
        status: int | None = None,
        delay: float | None = None,
        times: int = 1,
        message: str | None = None,
        changes: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Answer the next ``times`` API requests matching ``path`` (a glob, relative to
        ``/v1/api/apps/{app_id}``) with ``code`` / HTTP ``status``, after ``delay`` seconds;
        or let them succeed with their reply's keys changed (``changes``; None removes one)."""
        body = {
            "path": path,
            "code": code,
            "status": status,
            "delay": delay,
            "times": times,
            "message": message,
            "changes": changes,
        }
        return self.call("POST", "/faults", json=body)

    def faults(self) -> list[dict[str, Any]]:
        return self.call("GET", "/faults")

    def clear_faults(self) -> None:
        self.call("DELETE", "/faults")

    def reset(self, *, accounts: bool = False) -> dict[str, Any]:
        """Back to the demo data; with ``accounts``, also back to the one "zapflow" account."""
        return self.call("POST", "/reset", json={"accounts": accounts})
