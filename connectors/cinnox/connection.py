"""A CINNOX connection: the App ID, App Token and Base URL of one CINNOX "Zapier account"."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class CinnoxConnection(BaseModel):
    """Credentials generated in the CINNOX Dashboard (Administration > Service Integration >
    Zapier)."""

    model_config = ConfigDict(extra="forbid")

    app_id: str = Field(min_length=1, description="App ID")
    app_token: SecretStr = Field(description="App Token (secret)")
    base_url: str = Field(min_length=1, description="Base URL, e.g. https://examplebaseURL.com")
