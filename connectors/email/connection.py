"""An email connection: the SMTP server that sends (``email.send_email``), the IMAP server the
``new_email`` trigger reads, one login for both, the default sender, and how TLS is checked.

The password travels only to those servers (after TLS is up, unless a security is none); it is
a ``SecretStr``, so it never shows in reprs, logs or messages.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Literal, Self

from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from connectors._contract import EmptyMeansDefault
from connectors.email.addresses import OptionalAddress

Security = Literal["starttls", "tls", "none"]
SMTP_PORTS: dict[str, int] = {"starttls": 587, "tls": 465, "none": 25}
IMAP_PORTS: dict[str, int] = {"starttls": 143, "tls": 993, "none": 143}
PEM_START = "-----BEGIN CERTIFICATE-----"
_SECURITY_HELP = (
    "starttls: connect in plain and switch to TLS before logging in; tls: TLS from the start; "
    "none: no encryption (a server on your own network)"
)


class EmailConnection(EmptyMeansDefault):
    """One mail account. Fields left empty take their default."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(
        "",
        description="The SMTP server that sends, e.g. smtp.example.com; empty for a connection "
        "that only reads mail",
    )
    port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="The SMTP port; default by security: 587 (starttls), 465 (tls), 25 (none)",
    )
    security: Security = Field("starttls", description=f"For SMTP: {_SECURITY_HELP}")
    username: str = Field(
        "", description="The login (SMTP and IMAP); empty: send without logging in"
    )
    password: SecretStr = Field(SecretStr(""), description="The password (secret)")
    from_address: OptionalAddress = Field(
        "",
        description="The sender when a step gives no `from`, e.g. Zaps <zaps@example.com>",
    )
    imap_host: str = Field(
        "",
        description="The IMAP server the new_email trigger reads, e.g. imap.example.com; "
        "empty for a connection that only sends",
    )
    imap_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="The IMAP port; default by imap_security: 993 (tls), 143 (starttls, none)",
    )
    imap_security: Security = Field("tls", description=f"For IMAP: {_SECURITY_HELP}")
    timeout: float = Field(
        30, gt=0, le=300, description="Seconds to wait for each answer of a server, up to 300"
    )
    ca_certificate: str = Field(
        "",
        description="A CA to trust instead of the system's, for a server with a self-signed "
        "or private certificate: its PEM text or the path of a PEM file",
    )
    verify_certificate: bool = Field(
        True,
        description="Check the servers' TLS certificates and names (default true); false "
        "trusts any certificate, which lets a man in the middle read the password",
    )

    @field_validator("host", "imap_host")
    @classmethod
    def _host(cls, value: str) -> str:
        value = value.strip()
        if any(c in value for c in " /:@"):
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
    def _complete(self) -> Self:
        if not self.host and not self.imap_host:
            raise ValueError("give a host (SMTP, to send), an imap_host (to read) or both")
        if self.password.get_secret_value() and not self.username:
            raise ValueError("a password needs a username")
        if self.imap_host and not self.username:
            raise ValueError("reading mail (imap_host) needs a username and password")
        return self

    @property
    def port_number(self) -> int:
        return self.port or SMTP_PORTS[self.security]

    @property
    def server(self) -> str:
        """The SMTP server as messages name it."""
        return f"{self.host}:{self.port_number}"

    @property
    def imap_port_number(self) -> int:
        return self.imap_port or IMAP_PORTS[self.imap_security]

    @property
    def imap_server(self) -> str:
        return f"{self.imap_host}:{self.imap_port_number}"

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS settings for tls and starttls."""
        ca = self.ca_certificate
        if ca.startswith(PEM_START):
            context = ssl.create_default_context(cadata=ca)
        else:
            context = ssl.create_default_context(cafile=ca or None)
        if not self.verify_certificate:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context
