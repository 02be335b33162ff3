"""Calling Slack's Web API with a bot token and reading its answers.

Slack answers HTTP 200 with ``{"ok": false, "error": "channel_not_found"}`` when it refuses a
call: a refused token (``invalid_auth``, ``not_authed``, ``token_revoked`` …) raises
``AuthError``; Slack's own hiccups and ``ratelimited`` raise ``RetryableError``; anything else
raises ``PermanentError`` naming Slack's error and what to do about it. HTTP 429 is retried
after its ``Retry-After``; timeouts, connection errors and 5xx are retried.
"""

from __future__ import annotations

from typing import Any

import httpx

from connectors import _chat_webhooks as webhooks
from connectors._errors import AuthError, ConnectorError, PermanentError, RetryableError
from connectors.slack.connection import SlackConnection

AUTH_ERRORS = {
    "invalid_auth",
    "not_authed",
    "token_revoked",
    "token_expired",
    "account_inactive",
    "not_allowed_token_type",
}
RETRYABLE_ERRORS = {"ratelimited", "internal_error", "fatal_error", "service_unavailable"}
HINTS = {
    "channel_not_found": "check the channel id, and invite the bot to a private channel",
    "not_in_channel": "invite the bot to the channel (/invite @your-bot)",
    "is_archived": "the channel is archived",
    "msg_too_long": "the text is longer than Slack takes (40,000 characters)",
    "no_text": "give text or blocks",
    "invalid_blocks": "the blocks are not valid Block Kit",
    "missing_scope": "add the scope to the Slack app and reinstall it",
    "thread_not_found": "thread_ts names no message in this channel",
}


async def call(
    conn: SlackConnection | None,
    method: str,
    payload: dict[str, Any],
    *,
    timeout: float,
    connection_name: str | None,
) -> dict[str, Any]:
    """Slack's answer to ``method`` (e.g. ``chat.postMessage``) when it is ``ok``."""
    token = conn.bot_token.get_secret_value() if conn is not None else ""
    if not token:
        raise PermanentError(
            f"slack {method} needs a bot token: give the step a connection that has a "
            "bot_token (`zapflow connect slack NAME --set bot_token=xoxb-…`)"
        )
    assert conn is not None
    url = f"{conn.api_base_url}/{method}"
    try:
        reply = await webhooks.client("slack").post(
            url,
            json=payload,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )
    except httpx.TimeoutException:
        raise RetryableError(f"Slack {method} did not answer within {timeout:g} s") from None
    except httpx.TransportError as exc:
        raise RetryableError(
            f"could not reach Slack at {url}: {type(exc).__name__} {exc}"
        ) from None
    return _answer(reply, method, connection_name)


def _answer(reply: httpx.Response, method: str, connection_name: str | None) -> dict[str, Any]:
    if reply.status_code >= 500 or reply.status_code in (408, 429):
        text = webhooks.Reply(reply.status_code, reply.text).clipped
        raise webhooks.transient(f"Slack {method} answered HTTP {reply.status_code}: {text}", reply)
    try:
        body = reply.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "ok" not in body:
        text = webhooks.Reply(reply.status_code, reply.text).clipped
        raise PermanentError(f"Slack {method} answered HTTP {reply.status_code}: {text}")
    if not body["ok"]:
        raise refusal(body, method, connection_name)
    return body


def refusal(body: dict[str, Any], method: str, connection_name: str | None) -> ConnectorError:
    """The error for Slack's ``{"ok": false, "error": …}``."""
    error = str(body.get("error") or "unknown_error")
    message = f"Slack refused {method}: {error}"
    if error in AUTH_ERRORS:
        rekey = f"zapflow connections rekey slack {connection_name}" if connection_name else ""
        again = f": re-enter it with `{rekey}`" if rekey else ""
        return AuthError(f"{message}; the bot token was not accepted{again}")
    if error in RETRYABLE_ERRORS:
        return RetryableError(message)
    details = [HINTS[error]] if error in HINTS else []
    if body.get("needed"):
        details.append(f"needed: {body['needed']}")
    details += [str(m) for m in (body.get("response_metadata") or {}).get("messages", [])]
    return PermanentError(f"{message} ({'; '.join(details)})" if details else message)
