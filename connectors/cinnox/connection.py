"""A CINNOX connection: the App ID, App Token and Base URL of one CINNOX "Zapier account"."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from connectors._rates import Rate, RateSetting
from connectors.cinnox import wire


class CinnoxConnection(BaseModel):
    """Credentials generated in the CINNOX Dashboard (Administration > Service Integration >
    Zapier)."""

    model_config = ConfigDict(extra="forbid")

    app_id: str = Field(min_length=1, description="App ID")
    app_token: SecretStr = Field(description="App Token (secret)")
    base_url: str = Field(min_length=1, description="Base URL, e.g. https://examplebaseURL.com")
    rate_limit: RateSetting = Field(
        Rate(wire.RATE_LIMIT_PER_MINUTE, 60.0),
        description=(
            "Rate limit, e.g. 500/min (CINNOX's limit per service account, the default): API "
            "calls wait for a slot, counted across every zapflow serve sharing the inbox"
        ),
    )

    @field_validator("base_url")
    @classmethod
    def _absolute_http_url(cls, value: str) -> str:
        """The Dashboard shows the Base URL with its scheme; one typed without it (or with a
        path typo such as ``https//``) would fail on every call, so it is refused here."""
        text = value.strip()
        parts = urlsplit(text)
        if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"{value!r} is not an http(s) URL; copy the Base URL with its scheme from the "
                "CINNOX Dashboard (Administration > Service Integration > Zapier), e.g. "
                "https://examplebaseURL.com"
            )
        if parts.query or parts.fragment:
            raise ValueError(f"{value!r}: the Base URL takes no ?query or #fragment")
        return text.rstrip("/")
