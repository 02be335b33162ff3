"""The Slack app's actions: a message through an incoming webhook, or chat.postMessage."""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from connectors import _chat_webhooks as webhooks
from connectors._contract import ActionContext
from connectors._errors import AuthError, PermanentError
from connectors.slack import web_api
from connectors.slack._app import app
from connectors.slack.connection import SlackConnection

MAX_BLOCKS = 50
WEBHOOK_AUTH_ERRORS = {"invalid_token", "no_service", "no_service_id", "no_team", "team_disabled"}
WEBHOOK_HINTS = {
    "invalid_payload": "the message is not valid JSON Slack understands",
    "no_text": "give text or blocks",
    "invalid_blocks": "the blocks are not valid Block Kit",
    "channel_is_archived": "the webhook's channel is archived",
    "channel_not_found": "the webhook's channel is gone",
    "action_prohibited": "a workspace admin restricted posting to this channel",
    "posting_to_general_channel_denied": "only admins may post to this channel",
}


_TIMEOUT_HELP = "Seconds to wait for Slack, up to 300"


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(
        None,
        description="The message, in Slack's mrkdwn (*bold*, _italic_, <https://…|links>); "
        "with blocks, the text notifications show",
    )
    blocks: list[dict[str, Any]] | None = Field(
        None,
        max_length=MAX_BLOCKS,
        description="Block Kit blocks (https://api.slack.com/block-kit), e.g. "
        "[{type: section, text: {type: mrkdwn, text: '*New order*'}}]",
    )

    @model_validator(mode="after")
    def _text_or_blocks(self) -> Self:
        if not self.text and not self.blocks:
            raise ValueError("give text, blocks or both")
        return self

    def content(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if self.text:
            body["text"] = self.text
        if self.blocks:
            body["blocks"] = self.blocks
        return body


# --------------------------------------------------------------------------- webhook


class WebhookMessageInput(_Message):
    webhook_url: SecretStr | None = Field(
        None,
        description="The incoming webhook URL; default: the connection's webhook_url. Prefer "
        "the connection: a URL given here shows in the zap file and in run history",
    )
    timeout: float = Field(30, gt=0, le=300, description=_TIMEOUT_HELP)


class WebhookSent(BaseModel):
    response: str = Field(description="Slack's answer: ok", examples=["ok"])


def _webhook_url(input: WebhookMessageInput, ctx: ActionContext) -> SecretStr:
    conn = ctx.connection
    assert conn is None or isinstance(conn, SlackConnection)
    saved = conn.webhook_url if conn else None
    return webhooks.step_url(input.webhook_url, saved, "slack.send_webhook_message")


@app.action("send_webhook_message", title="Send a message to an incoming webhook")
async def send_webhook_message(input: WebhookMessageInput, ctx: ActionContext) -> WebhookSent:
    """Posts a message (text and/or Block Kit blocks) to a Slack incoming webhook, which
    delivers it to the channel it was made for.

    Slack's refusals fail the step with Slack's own words (`invalid_payload`, `no_text`,
    `channel_is_archived` …); a webhook that was removed (`no_service`, `invalid_token`) is an
    auth error: make a new one and re-enter it. 429 (honouring Retry-After), 5xx, timeouts and
    connection errors are retried.
    """
    url = _webhook_url(input, ctx)
    who = "Slack's incoming webhook"
    reply = await webhooks.post_json(url, input.content(), input.timeout, who, "slack")
    error = reply.text.strip()
    if 200 <= reply.status < 300:
        return WebhookSent(response=error or "ok")
    message = f"{who} answered HTTP {reply.status}: {reply.clipped}"
    if error in WEBHOOK_AUTH_ERRORS:
        fix = f"connection {ctx.connection_name!r}'s" if ctx.connection_name else "the step's"
        raise AuthError(f"{message}; the webhook is gone: make a new one and update {fix} URL")
    hint = WEBHOOK_HINTS.get(error)
    raise PermanentError(f"{message} ({hint})" if hint else message)


# --------------------------------------------------------------------------- chat.postMessage


class _Channel(BaseModel):
    channel: str = Field(
        min_length=1,
        description="Where to post: a channel id (C0123ABCD), a channel name (#sales) or a "
        "user id (U0123ABCD) for a direct message; the bot must be in the channel",
        examples=["C0123ABCD"],
    )


class PostMessageInput(_Message, _Channel):  # fields of the last base come first: channel
    thread_ts: str | None = Field(
        None,
        description="Reply in this thread: the ts of its first message, as text "
        "(e.g. '{{ steps.post.ts }}')",
    )
    reply_broadcast: bool = Field(
        False, description="With thread_ts: also show the reply in the channel"
    )
    username: str | None = Field(
        None, description="Post under this name (needs the chat:write.customize scope)"
    )
    icon_emoji: str | None = Field(
        None, description="Post with this emoji as the icon, e.g. :package: (as username)"
    )
    icon_url: str | None = Field(None, description="Post with this image as the icon (as username)")
    unfurl_links: bool | None = Field(None, description="Show previews of links in the text")
    timeout: float = Field(30, gt=0, le=300, description=_TIMEOUT_HELP)

    @field_validator("thread_ts", mode="before")
    @classmethod
    def _ts_is_text(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise ValueError(
                "quote it, e.g. '1712345678.123456': as a number it loses digits and names "
                "another message"
            )
        return value

    @model_validator(mode="after")
    def _icons(self) -> Self:
        if self.icon_emoji and self.icon_url:
            raise ValueError("give icon_emoji or icon_url, not both")
        if self.reply_broadcast and not self.thread_ts:
            raise ValueError("reply_broadcast is for a reply: give thread_ts too")
        return self

    def payload(self) -> dict[str, Any]:
        optional = {
            "thread_ts": self.thread_ts,
            "reply_broadcast": self.reply_broadcast or None,
            "username": self.username,
            "icon_emoji": self.icon_emoji,
            "icon_url": self.icon_url,
            "unfurl_links": self.unfurl_links,
        }
        given = {k: v for k, v in optional.items() if v is not None}
        return {"channel": self.channel, **self.content(), **given}


class PostedMessage(BaseModel):
    channel: str = Field(description="The channel's id", examples=["C0123ABCD"])
    ts: str = Field(
        description="The message's timestamp, its id: give it as thread_ts to reply in its thread",
        examples=["1764062400.123456"],
    )
    thread_ts: str | None = Field(
        None, description="The thread it was posted in, if any", examples=[None]
    )


@app.action("post_message", title="Post a message")
async def post_message(input: PostMessageInput, ctx: ActionContext) -> PostedMessage:
    """Posts a message (text and/or Block Kit blocks) to a channel, a direct message or a
    thread with `chat.postMessage`, as the connection's bot; its output `ts` is what a later
    step gives as `thread_ts` to reply in the thread.

    Slack's refusals fail the step with Slack's error and a hint (`channel_not_found`,
    `not_in_channel`, `invalid_blocks` …); a rejected token (`invalid_auth`, `not_authed`,
    `token_revoked`) fails at once and asks you to `zapflow connections rekey slack NAME`.
    429 (honouring Retry-After), 5xx, timeouts and connection errors are retried; Slack has no
    idempotency key, so a timeout after Slack posted can post twice.
    """
    conn = ctx.connection
    assert conn is None or isinstance(conn, SlackConnection)
    body = await web_api.call(
        conn,
        "chat.postMessage",
        input.payload(),
        timeout=input.timeout,
        connection_name=ctx.connection_name,
    )
    message = body.get("message") or {}
    return PostedMessage(
        channel=str(body.get("channel", "")),
        ts=str(body.get("ts", "")),
        thread_ts=message.get("thread_ts"),
    )


@app.connection_check
async def check(conn: SlackConnection, name: str) -> str:
    """``auth.test`` with the bot token; a webhook cannot be checked without posting."""
    if not conn.bot_token.get_secret_value():
        return "webhook_url kept; not checked (checking it would post a message)"
    body = await web_api.call(conn, "auth.test", {}, timeout=10, connection_name=name)
    return f"Slack accepted the bot token: {body.get('user')} in {body.get('team')}"
