"""A Teams connection: one channel's webhook URL, which is itself the secret."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from connectors._chat_webhooks import checked_url


class TeamsConnection(BaseModel):
    """The webhook of one Teams channel."""

    model_config = ConfigDict(extra="forbid")

    webhook_url: SecretStr = Field(
        description="The channel's webhook URL: from a Workflows flow 'When a Teams webhook "
        "request is received' (https://….logic.azure.com/… or …powerautomate…), or a classic "
        "incoming webhook (secret)"
    )

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: SecretStr) -> SecretStr:
        return SecretStr(checked_url(value.get_secret_value(), "webhook_url"))
