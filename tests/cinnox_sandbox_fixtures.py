"""Fixtures for tests that need a CINNOX sandbox and a webhook receiver, both on loopback with
real HTTP. Load them in a test module::

    pytest_plugins = ["cinnox_sandbox_fixtures"]

(or import the fixtures by name). ``cinnox_sandbox`` resets the (module-wide) sandbox to the
demo data and one fresh account before each test, so tests do not see each other's state.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from connectors.cinnox import wire
from connectors.cinnox.sandbox import SandboxControl, run_in_thread, serve_in_thread

FAST: dict[str, Any] = {
    "retry_delays": (0.05, 0.1),
    "sms_receipt_delay": 0.05,
    "challenge_timeout": 2.0,
}
"""Sandbox timings that keep tests quick: two retries, receipts at once."""


@dataclass
class Hook:
    events: list[dict[str, Any]] = field(default_factory=list)
    challenges: int = 0
    fail: int = 0
    """Answer this many more events with HTTP 500."""
    challenge: str = "echo"
    """echo: answer the challenge right; wrong: echo something else; a number: that status."""
    delay: float = 0.0
    """Seconds to take before answering an event."""


class Receiver:
    """A webhook receiver: ``POST /hook/{name}`` (or ``/hook/{name}/{channel}``, one URL per
    event family under a hook) answers CINNOX's challenge and records events, as each hook is
    configured."""

    def __init__(self) -> None:
        self.hooks: dict[str, Hook] = defaultdict(Hook)
        self.url = ""
        self.app = Starlette(
            routes=[
                Route("/hook/{name}", self._post, methods=["POST"]),
                Route("/hook/{name}/{channel}", self._post, methods=["POST"]),
            ]
        )

    async def _post(self, request: Request) -> JSONResponse:
        hook = self.hooks[request.path_params["name"]]
        body = await request.json()
        if isinstance(body, dict) and set(body) == {"challenge"}:
            hook.challenges += 1
            if hook.challenge == "echo":
                return JSONResponse(wire.challenge_reply(body["challenge"]))
            if hook.challenge == "wrong":
                return JSONResponse(wire.challenge_reply("not-" + body["challenge"]))
            return JSONResponse({"error": "no"}, status_code=int(hook.challenge))
        if hook.delay:
            await asyncio.sleep(hook.delay)
        if hook.fail > 0:
            hook.fail -= 1
            return JSONResponse({"error": "try later"}, status_code=500)
        hook.events.append(body)
        return JSONResponse({"ok": True})

    def hook(self, *, fail: int = 0, challenge: str = "echo", delay: float = 0.0) -> str:
        """A new hook URL (unguessable, like a zap's per-connection URL)."""
        name = uuid.uuid4().hex
        self.hooks[name] = Hook(fail=fail, challenge=challenge, delay=delay)
        return f"{self.url}/hook/{name}"

    def of(self, url: str) -> Hook:
        """The hook of ``url`` (``…/hook/{name}``, with or without a ``/{channel}``)."""
        return self.hooks[url.split("/hook/", 1)[1].split("/", 1)[0]]

    def wait(self, url: str, count: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
        """The events the hook received, once there are at least ``count``."""
        deadline = time.monotonic() + timeout
        events = self.of(url).events
        while len(events) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(events)} of {count} events arrived at {url}")
            time.sleep(0.01)
        return list(events)


@dataclass
class Sandbox:
    """A running sandbox, its control client and its first account, with an API client."""

    base_url: str
    control: SandboxControl
    app_id: str
    token: str
    api: httpx.Client

    def prefix(self, app_id: str | None = None) -> str:
        return self.base_url + wire.API_PREFIX.format(app_id=app_id or self.app_id)

    def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        app_id: str | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """An API call as the first account, or with another token / App ID."""
        headers = {"Authorization": f"Bearer {token or self.token}", **kwargs.pop("headers", {})}
        return self.api.request(method, self.prefix(app_id) + path, headers=headers, **kwargs)

    def subscribe(
        self, family: str, url: str, account: dict[str, Any] | None = None
    ) -> httpx.Response:
        """Subscribe ``url`` to an event family, as the first account or ``account``."""
        path = wire.EVENT_SUB.format(family=family)
        body = {"enabled": True, "url": url}
        if account is None:
            return self.call("PATCH", path, json=body)
        return self.call(
            "PATCH", path, token=account["appToken"], app_id=account["appId"], json=body
        )


@pytest.fixture(scope="module")
def cinnox_receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    with serve_in_thread(receiver.app) as url:
        receiver.url = url
        yield receiver


@pytest.fixture
def cinnox_sandbox_factory(
    tmp_path: Path,
) -> Callable[..., AbstractContextManager[tuple[str, SandboxControl]]]:
    """Start another sandbox: ``with cinnox_sandbox_factory(rate_limit=3) as (url, control)``;
    ``db`` defaults to a file in the test's temporary folder."""

    def start(db: Path | None = None, **options: Any) -> Any:
        return run_in_thread(db or tmp_path / "sandbox.db", **{**FAST, **options})

    return start


@pytest.fixture(scope="module")
def cinnox_sandbox_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    db = tmp_path_factory.mktemp("sandbox") / "sandbox.db"
    with run_in_thread(db, **FAST) as running:
        yield running


@pytest.fixture
def cinnox_sandbox(cinnox_sandbox_server: tuple[str, SandboxControl]) -> Iterator[Sandbox]:
    base_url, control = cinnox_sandbox_server
    control.reset(accounts=True)
    account = control.accounts()[0]
    with httpx.Client(timeout=10) as api:
        yield Sandbox(base_url, control, account["appId"], account["appToken"], api)
