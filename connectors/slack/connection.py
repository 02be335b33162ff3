"""A Slack connection: a bot token for the Web API and/or an incoming webhook URL.

Both are secrets: the token travels only in the ``Authorization`` header to ``api_base_url``,
the webhook URL (whose path is the secret) is never shown whole in messages.
"""

from __future__ import annotations

from typing import Self

from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from connectors._chat_webhooks import checked_url
from connectors._contract import EmptyMeansDefault

DEFAULT_API_BASE_URL = "https://slack.com/api"


class SlackConnection(EmptyMeansDefault):
    """A Slack workspace's bot token, an incoming webhook, or both."""

    model_config = ConfigDict(extra="forbid")

    bot_token: SecretStr = Field(
        SecretStr(""),
        description="For slack.post_message: the bot's OAuth token, xoxb-… (Slack app → OAuth "
        "& Permissions; scope chat:write, and chat:write.customize for username/icon) (secret)",
    )
    webhook_url: SecretStr = Field(
        SecretStr(""),
        description="For slack.send_webhook_message: the incoming webhook URL, "
        "https://hooks.slack.com/services/… (secret)",
    )
    api_base_url: str = Field(
        DEFAULT_API_BASE_URL,
        description=f"The Web API's base URL; default {DEFAULT_API_BASE_URL} (change it only "
        "for a Slack-compatible server or a test double)",
    )

    @field_validator("api_base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return checked_url(value, "api_base_url").rstrip("/")

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value().strip()
        return SecretStr(checked_url(url, "webhook_url") if url else "")

    @model_validator(mode="after")
    def _something(self) -> Self:
        if not (self.bot_token.get_secret_value() or self.webhook_url.get_secret_value()):
            raise ValueError("give a bot_token, a webhook_url or both")
        return self
