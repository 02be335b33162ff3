"""The Teams app's action: post a message card to a channel's webhook."""

from __future__ import annotations

import re
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from connectors import _chat_webhooks as webhooks
from connectors._contract import ActionContext
from connectors._errors import AuthError, PermanentError, RetryableError
from connectors.teams._app import app
from connectors.teams.connection import TeamsConnection

ADAPTIVE_CARD = "application/vnd.microsoft.card.adaptive"
GONE = (401, 403, 404, 410)
CLASSIC_ERROR = re.compile(r"returned HTTP error (\d{3})")
"""A classic incoming webhook answers 200 with this text when Teams refused the message."""


class SendMessageInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(None, description="A heading shown in bold above the text")
    text: str | None = Field(
        None, description="The message; Teams shows a subset of Markdown (**bold**, [links](…))"
    )
    card: dict[str, Any] | None = Field(
        None,
        description="An Adaptive Card (https://adaptivecards.io), {type: AdaptiveCard, "
        "version: '1.4', body: [...]}, sent instead of title and text",
    )
    webhook_url: SecretStr | None = Field(
        None,
        description="The channel's webhook URL; default: the connection's. Prefer the "
        "connection: a URL given here shows in the zap file and in run history",
    )
    timeout: float = Field(30, gt=0, le=300, description="Seconds to wait for Teams, up to 300")

    @model_validator(mode="after")
    def _content(self) -> Self:
        if self.card is not None and (self.title or self.text):
            raise ValueError("give a card, or title and text; not both")
        if self.card is None and not self.text:
            raise ValueError("give text (and a title if you like), or a card")
        if self.card is not None and self.card.get("type") != "AdaptiveCard":
            raise ValueError("card: an Adaptive Card has type: AdaptiveCard")
        return self

    def payload(self) -> dict[str, Any]:
        card = self.card or _text_card(self.title, self.text or "")
        return {
            "type": "message",
            "attachments": [{"contentType": ADAPTIVE_CARD, "contentUrl": None, "content": card}],
        }


def _text_card(title: str | None, text: str) -> dict[str, Any]:
    heading: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": title, "weight": "Bolder", "size": "Medium"}
    ]
    blocks: list[dict[str, Any]] = [
        *(heading if title else []),
        {"type": "TextBlock", "text": text},
    ]
    return {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [block | {"wrap": True} for block in blocks],
    }


class MessageSent(BaseModel):
    status: int = Field(description="The webhook's HTTP status: 202 or 200", examples=[202])
    response: str = Field(description="The webhook's answer, often empty or 1", examples=[""])


def _webhook_url(input: SendMessageInput, ctx: ActionContext) -> SecretStr:
    conn = ctx.connection
    assert conn is None or isinstance(conn, TeamsConnection)
    saved = conn.webhook_url if conn else None
    return webhooks.step_url(input.webhook_url, saved, "teams.send_message")


@app.action("send_message", title="Send a channel message")
async def send_message(input: SendMessageInput, ctx: ActionContext) -> MessageSent:
    """Posts a message to a Teams channel's webhook, as an Adaptive Card: the `title` and
    `text` you give, or your own `card`.

    A webhook that is gone or refuses its URL (HTTP 401, 403, 404, 410) is an auth error: make
    a new one and re-enter it. Other refusals (a card Teams cannot read) fail the step with
    Teams' answer; 429, 5xx, timeouts and connection errors are retried.
    """
    url = _webhook_url(input, ctx)
    who = "the Teams webhook"
    reply = await webhooks.post_json(url, input.payload(), input.timeout, who, "teams")
    message = f"{who} answered HTTP {reply.status}: {reply.clipped}"
    refused = CLASSIC_ERROR.search(reply.text) if reply.status == 200 else None
    if refused and (refused[1] == "429" or refused[1].startswith("5")):
        raise RetryableError(message)
    if reply.status in GONE:
        fix = f"connection {ctx.connection_name!r}'s" if ctx.connection_name else "the step's"
        raise AuthError(f"{message}; the webhook refused its URL: make a new one and update {fix}")
    if refused or not 200 <= reply.status < 300:
        raise PermanentError(message)
    return MessageSent(status=reply.status, response=reply.text.strip())
