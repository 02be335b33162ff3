"""An HTTP connection: how requests to one service authenticate, its base URL, and the secret
outgoing webhooks are signed with.

Steps may also run without a connection (a public URL). A connection's credentials travel only
in request headers, never in URLs or messages; with a ``base_url`` they go only to that origin.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from connectors._clients import http_url

AuthKind = Literal["none", "basic", "bearer", "api_key"]
DEFAULT_API_KEY_HEADER = "X-API-Key"
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
"""An HTTP header name (RFC 9110 token)."""

_FIELDS_OF: dict[str, tuple[str, ...]] = {
    "none": (),
    "basic": ("username", "password"),
    "bearer": ("token",),
    "api_key": ("api_key",),
}
_AUTH_FIELDS = ("username", "password", "token", "api_key_header", "api_key")


class HttpConnection(BaseModel):
    """Credentials of one HTTP service. Give the fields of the chosen `auth` and leave the
    others empty."""

    model_config = ConfigDict(extra="forbid")

    auth: AuthKind = Field(
        "none",
        description="How requests authenticate: none, basic (username and password), bearer "
        "(token) or api_key (a header carrying the key)",
    )
    username: str = Field("", description="basic: the user name")
    password: SecretStr = Field(SecretStr(""), description="basic: the password (secret)")
    token: SecretStr = Field(
        SecretStr(""), description="bearer: sent as `Authorization: Bearer <token>` (secret)"
    )
    api_key_header: str = Field(
        "",
        description=f"api_key: the header that carries the key; default {DEFAULT_API_KEY_HEADER}",
    )
    api_key: SecretStr = Field(SecretStr(""), description="api_key: the key (secret)")
    base_url: str = Field(
        "",
        description="Optional, e.g. https://api.example.com/v1: steps may then give a path "
        "(/orders) joined to it, and the credentials are sent to this origin only",
    )
    signing_secret: SecretStr = Field(
        SecretStr(""),
        description="For http.send_webhook: the Standard Webhooks secret, whsec_<base64> (secret)",
    )

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        value = value.strip()
        if value:
            http_url(value, "base_url")
        return value

    @field_validator("api_key_header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        value = value.strip()
        if value and not HEADER_NAME.match(value):
            raise ValueError(f"{value!r} is not a header name (letters, digits, - and _)")
        return value

    @field_validator("signing_secret")
    @classmethod
    def _signing_secret(cls, value: SecretStr) -> SecretStr:
        secret = value.get_secret_value().strip()
        if not secret:
            return SecretStr("")
        try:
            key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if not secret.startswith("whsec_") or not key:
            raise ValueError("a signing secret is written whsec_ followed by base64")
        return SecretStr(secret)

    @model_validator(mode="after")
    def _fields_of_auth(self) -> Self:
        wanted = _FIELDS_OF[self.auth]
        missing = [f for f in wanted if not self._given(f)]
        if missing:
            raise ValueError(f"auth {self.auth} needs {' and '.join(missing)}")
        allowed = {*wanted, *(["api_key_header"] if self.auth == "api_key" else [])}
        unused = [f for f in _AUTH_FIELDS if f not in allowed and self._given(f)]
        if unused:
            raise ValueError(
                f"auth {self.auth} does not use {', '.join(unused)}: leave it empty "
                "or choose the auth that does"
            )
        return self

    def _given(self, field: str) -> bool:
        value = getattr(self, field)
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        return bool(text.strip())

    def credentials(self) -> dict[str, str]:
        """The headers that authenticate a request."""
        match self.auth:
            case "basic":
                return {"Authorization": f"Basic {self._basic()}"}
            case "bearer":
                return {"Authorization": f"Bearer {self.token.get_secret_value()}"}
            case "api_key":
                header = self.api_key_header or DEFAULT_API_KEY_HEADER
                return {header: self.api_key.get_secret_value()}
        return {}

    def secrets(self) -> list[str]:
        """Every form in which a secret of this connection could show up in an answer."""
        values = [
            s.get_secret_value()
            for s in (self.password, self.token, self.api_key, self.signing_secret)
        ]
        if self.auth == "basic":
            values.append(self._basic())
        return [v for v in values if v]

    def _basic(self) -> str:
        pair = f"{self.username}:{self.password.get_secret_value()}"
        return base64.b64encode(pair.encode()).decode()
