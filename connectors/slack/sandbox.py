"""A Slack sandbox: a small Starlette app on loopback that answers as Slack's Web API
(``chat.postMessage``, ``auth.test``) and incoming webhooks do, and records what it got, so
`zapflow demo` and the tests post real HTTP requests without a Slack workspace.

In Python::

    from connectors.slack.sandbox import run_in_thread

    with run_in_thread() as slack:  # slack.api_base_url, slack.bot_token, slack.webhook_url
        ...
        slack.messages()            # [("#customer-care", "Missed call …"), …]

Channels: C0SALES (#sales) and C0CARE (#customer-care), which the bot is in; C0PRIVATE (it is
not: not_in_channel) and C0ARCHIVED (is_archived). Failure switches, to watch a zap's retries
and errors: C0BUSY answers 429 with Retry-After once per message, C0DOWN 503, C0SLOW waits 2 s
and posts nothing; a token in ``revoked_tokens`` is refused as revoked, one in
``limited_tokens`` lacks chat:write.customize; a webhook URL ending in /x/archived,
/x/prohibited, /x/revoked, /x/down or /x/busy answers as Slack does in those cases.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

CHANNELS = {
    "C0SALES": "sales",
    "C0CARE": "customer-care",
    "C0PRIVATE": "private",
    "C0ARCHIVED": "old",
}
TROUBLE_CHANNELS = {"C0BUSY", "C0DOWN", "C0SLOW"}
WEBHOOK_ANSWERS = {
    "archived": (410, "channel_is_archived"),
    "prohibited": (403, "action_prohibited"),
    "revoked": (403, "invalid_token"),
    "down": (500, "internal server error"),
}


@dataclass
class Posted:
    """One message chat.postMessage accepted: the bearer token and the JSON body."""

    token: str = field(repr=False)
    body: dict[str, Any]


def _new_token() -> str:
    return "xoxb-sandbox-" + secrets.token_hex(12)


def _new_hook_secret() -> str:
    return "T0SANDBOX/B0SANDBOX/" + secrets.token_hex(12)


@dataclass
class SlackSandbox:
    """Slack's Web API (``/api/<method>``) and incoming webhooks (``/services/<secret>``)."""

    bot_token: str = field(default_factory=_new_token, repr=False)
    hook_secret: str = field(default_factory=_new_hook_secret, repr=False)
    limited_tokens: set[str] = field(default_factory=set, repr=False)
    """Accepted, but without the chat:write.customize scope (no username or icon)."""
    revoked_tokens: set[str] = field(default_factory=set, repr=False)
    url: str = ""
    posted: list[Posted] = field(default_factory=list)
    hooked: list[dict[str, Any]] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    issued: set[str] = field(default_factory=set)
    """The ts of every message posted: what thread_ts may name."""
    next_ts: int = 100

    @property
    def api_base_url(self) -> str:
        return f"{self.url}/api"

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/services/{self.hook_secret}"

    def reset(self) -> None:
        self.posted.clear()
        self.hooked.clear()
        self.attempts.clear()
        self.issued.clear()

    def messages(self) -> list[tuple[str, str]]:
        """(where, text) of each message received: "#channel" for a post, "webhook" for an
        incoming-webhook message."""
        posts = [(_channel_name(p.body.get("channel", "")), _words(p.body)) for p in self.posted]
        return posts + [("webhook", _words(body)) for body in self.hooked]

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/api/chat.postMessage", self.post_message, methods=["POST"]),
                Route("/api/auth.test", self.auth_test, methods=["POST"]),
                Route("/services/{secret:path}", self.webhook, methods=["POST"]),
            ]
        )

    # ------------------------------------------------------------------- Web API

    @staticmethod
    def _token(request: Request) -> str | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return token if scheme == "Bearer" and token else None

    def _auth_error(self, request: Request) -> Response | None:
        token = self._token(request)
        if token is None:
            return refuse("not_authed")
        if token in self.revoked_tokens:
            return refuse("token_revoked")
        if token != self.bot_token and token not in self.limited_tokens:
            return refuse("invalid_auth")
        return None

    async def auth_test(self, request: Request) -> Response:
        refused = self._auth_error(request)
        return refused or JSONResponse({"ok": True, "user": "zapbot", "team": "Acme HK"})

    async def post_message(self, request: Request) -> Response:
        refused = self._auth_error(request)
        if refused is not None:
            return refused
        body = await request.json()
        channel = _channel_id(str(body.get("channel", "")))
        refused = await self._trouble(channel, body) or self._refusal(
            channel, body, self._token(request)
        )
        if refused is not None:
            return refused
        self.posted.append(Posted(self._token(request) or "", body))
        self.next_ts += 1
        ts = f"1764062400.{self.next_ts:06d}"
        self.issued.add(ts)
        message = {"text": body.get("text", ""), "ts": ts, "bot_id": "B0ZAP"}
        if "thread_ts" in body:
            message["thread_ts"] = body["thread_ts"]
        return JSONResponse({"ok": True, "channel": channel, "ts": ts, "message": message})

    async def _trouble(self, channel: str, body: dict[str, Any]) -> Response | None:
        if channel == "C0BUSY":
            key = json.dumps(body, sort_keys=True)
            self.attempts[key] = self.attempts.get(key, 0) + 1
            if self.attempts[key] == 1:
                return JSONResponse(
                    {"ok": False, "error": "ratelimited"},
                    status_code=429,
                    headers={"Retry-After": "1"},
                )
        if channel == "C0DOWN":
            return PlainTextResponse("upstream connect error", status_code=503)
        if channel == "C0SLOW":  # the client gives up first; nothing is posted
            await asyncio.sleep(2)
            return refuse("request_timeout")
        return None

    def _refusal(self, channel: str, body: dict[str, Any], token: str | None) -> Response | None:
        if channel not in {*CHANNELS, "C0BUSY"}:
            return refuse("channel_not_found")
        if channel == "C0PRIVATE":
            return refuse("not_in_channel")
        if channel == "C0ARCHIVED":
            return refuse("is_archived")
        if not body.get("text") and not body.get("blocks"):
            return refuse("no_text")
        for i, block in enumerate(body.get("blocks") or []):
            if "type" not in block:
                problem = f"[ERROR] missing required field: type [json-pointer:/blocks/{i}]"
                return refuse("invalid_blocks", response_metadata={"messages": [problem]})
        if "username" in body and token in self.limited_tokens:
            return refuse("missing_scope", needed="chat:write.customize")
        if "thread_ts" in body and body["thread_ts"] not in self.issued:
            return refuse("thread_not_found")
        return None

    # ------------------------------------------------------------------- incoming webhooks

    async def webhook(self, request: Request) -> Response:
        secret, _, mode = request.path_params["secret"].partition("/x/")
        if secret != self.hook_secret:
            return PlainTextResponse("no_service", status_code=404)
        if mode in WEBHOOK_ANSWERS:
            status, text = WEBHOOK_ANSWERS[mode]
            return PlainTextResponse(text, status_code=status)
        if mode == "busy":
            return PlainTextResponse("rate limited", status_code=429, headers={"Retry-After": "3"})
        try:
            body = json.loads(await request.body())
        except ValueError:
            return PlainTextResponse("invalid_payload", status_code=400)
        if not body.get("text") and not body.get("blocks"):
            return PlainTextResponse("no_text", status_code=400)
        if any("type" not in block for block in body.get("blocks") or []):
            return PlainTextResponse("invalid_blocks", status_code=400)
        self.hooked.append(body)
        return PlainTextResponse("ok")


def refuse(error: str, **more: Any) -> Response:
    return JSONResponse({"ok": False, "error": error, **more})  # Slack says no with a 200


def _channel_id(given: str) -> str:
    name = given.removeprefix("#")
    return {n: cid for cid, n in CHANNELS.items()}.get(name, name)


def _channel_name(given: str) -> str:
    cid = _channel_id(given)
    return f"#{CHANNELS[cid]}" if cid in CHANNELS else given


def _words(body: dict[str, Any]) -> str:
    return str(body.get("text") or json.dumps(body.get("blocks"), ensure_ascii=False))


@contextmanager
def run_in_thread(sandbox: SlackSandbox | None = None) -> Iterator[SlackSandbox]:
    """Serve a Slack sandbox (a new one by default) on a free loopback port in a background
    thread until the block ends; yields it with its ``url`` set."""
    from connectors._loopback import serve_in_thread

    sandbox = sandbox or SlackSandbox()
    with serve_in_thread(sandbox.app()) as url:
        sandbox.url = url
        yield sandbox
