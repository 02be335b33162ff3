"""An SMTP connection: the server, how the link is secured, the login, the default sender.

The password travels only to the SMTP server (after TLS is up, unless ``security`` is none);
it is a ``SecretStr``, so it never shows in reprs, logs or messages.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from connectors.email.addresses import OptionalAddress

Security = Literal["starttls", "tls", "none"]
DEFAULT_PORTS: dict[str, int] = {"starttls": 587, "tls": 465, "none": 25}
PEM_START = "-----BEGIN CERTIFICATE-----"


class SmtpConnection(BaseModel):
    """One SMTP account. Fields left empty take their default."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(min_length=1, description="The SMTP server, e.g. smtp.example.com")
    port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Its port; default by security: 587 (starttls), 465 (tls), 25 (none)",
    )
    security: Security = Field(
        "starttls",
        description="starttls: connect in plain and switch to TLS before logging in (port 587); "
        "tls: TLS from the start (port 465); none: no encryption (a relay on your own network)",
    )
    username: str = Field("", description="The login; empty: send without logging in")
    password: SecretStr = Field(SecretStr(""), description="The password (secret)")
    from_address: OptionalAddress = Field(
        "",
        description="The sender when a step gives no `from`, e.g. Zaps <zaps@example.com>",
    )
    timeout: float = Field(
        30, gt=0, le=300, description="Seconds to wait for each answer of the server, up to 300"
    )
    ca_certificate: str = Field(
        "",
        description="A CA to trust instead of the system's, for a server with a self-signed "
        "or private certificate: its PEM text or the path of a PEM file",
    )
    verify_certificate: bool = Field(
        True,
        description="Check the server's TLS certificate and name (default true); false trusts "
        "any certificate, which lets a man in the middle read the password",
    )

    @model_validator(mode="before")
    @classmethod
    def _empty_is_default(cls, values: Any) -> Any:
        # `zapflow connect` asks for every field; an empty answer means "the default".
        if isinstance(values, dict):
            return {k: v for k, v in values.items() if not (isinstance(v, str) and not v.strip())}
        return values

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        value = value.strip()
        if not value or any(c in value for c in " /:@"):
            raise ValueError(f"{value!r} is not a host name; give one such as smtp.example.com")
        return value

    @field_validator("ca_certificate")
    @classmethod
    def _ca(cls, value: str) -> str:
        value = value.strip()
        if value and not value.startswith(PEM_START) and not Path(value).is_file():
            raise ValueError(f"give the CA's PEM text ({PEM_START} …) or the path of a PEM file")
        return value

    @model_validator(mode="after")
    def _login(self) -> Self:
        if self.password.get_secret_value() and not self.username:
            raise ValueError("a password needs a username")
        return self

    @property
    def server(self) -> str:
        """``host:port`` as messages name the server."""
        return f"{self.host}:{self.port_number}"

    @property
    def port_number(self) -> int:
        return self.port or DEFAULT_PORTS[self.security]

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS settings for ``tls`` and ``starttls``."""
        ca = self.ca_certificate
        if ca.startswith(PEM_START):
            context = ssl.create_default_context(cadata=ca)
        else:
            context = ssl.create_default_context(cafile=ca or None)
        if not self.verify_certificate:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context
