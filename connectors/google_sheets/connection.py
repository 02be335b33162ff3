"""A Google Sheets connection: a service account's key, and where the Sheets API is.

Give the key file whole (``service_account_json``, the JSON Google Cloud lets you download), or
its ``client_email`` and ``private_key``. The spreadsheets a zap uses must be shared with the
service account's e-mail address. The private key never leaves this process: it signs a
short-lived token request, and only that token travels with API calls.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, model_validator

from connectors._clients import http_url

if TYPE_CHECKING:  # cryptography is imported when a key is first read, not with the app
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

DEFAULT_API_BASE_URL = "https://sheets.googleapis.com"
DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"


@dataclass(frozen=True, repr=False)
class ServiceAccountKey:
    """What signs token requests; its repr shows the account, never the key."""

    client_email: str
    private_key: RSAPrivateKey
    key_id: str
    token_uri: str

    def __repr__(self) -> str:
        return f"ServiceAccountKey({self.client_email!r})"


def _private_key(pem: str) -> RSAPrivateKey:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, RSAPrivateKey):
        raise ValueError(
            "private_key is not an RSA private key in PEM form (-----BEGIN PRIVATE KEY-----…)"
        )
    return key


def _key_file(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict) or data.get("type") != "service_account":
        raise ValueError(
            "service_account_json must be a service account's JSON key file, whole "
            '({"type": "service_account", "client_email": …, "private_key": …})'
        )
    missing = [f for f in ("client_email", "private_key") if not data.get(f)]
    if missing:
        raise ValueError(f"service_account_json has no {' or '.join(missing)}")
    return data


class GoogleSheetsConnection(BaseModel):
    """A Google Cloud service account. Give service_account_json, or client_email and
    private_key; leave the others empty."""

    model_config = ConfigDict(extra="forbid")

    service_account_json: SecretStr = Field(
        SecretStr(""),
        description="The service account's JSON key file, whole (secret); or give "
        "client_email and private_key instead",
    )
    client_email: str = Field(
        "",
        description="Without the JSON: the account's e-mail, "
        "e.g. zaps@proj.iam.gserviceaccount.com",
    )
    private_key: SecretStr = Field(
        SecretStr(""),
        description="Without the JSON: the key's private_key, "
        "-----BEGIN PRIVATE KEY-----… (secret)",
    )
    private_key_id: str = Field(
        "", description="Without the JSON: the key's private_key_id (optional)"
    )
    token_uri: str = Field(
        "",
        description=f"Where tokens come from; default the key file's, else {DEFAULT_TOKEN_URI}",
    )
    api_base_url: str = Field(
        DEFAULT_API_BASE_URL,
        description=f"The Sheets API's address; default {DEFAULT_API_BASE_URL}",
    )
    _key: ServiceAccountKey = PrivateAttr()

    @model_validator(mode="after")
    def _one_key(self) -> Self:
        whole = self.service_account_json.get_secret_value().strip()
        pem = self.private_key.get_secret_value().strip()
        if whole and (pem or self.client_email.strip()):
            raise ValueError("give service_account_json, or client_email and private_key, not both")
        if whole:
            data = _key_file(whole)
            email, pem, key_id = (
                data["client_email"],
                data["private_key"],
                data.get("private_key_id", ""),
            )
            token_uri = self.token_uri.strip() or data.get("token_uri") or DEFAULT_TOKEN_URI
        elif pem and self.client_email.strip():
            email, key_id = self.client_email.strip(), self.private_key_id.strip()
            token_uri = self.token_uri.strip() or DEFAULT_TOKEN_URI
        else:
            raise ValueError(
                "give service_account_json (the key file, whole), or client_email and private_key"
            )
        http_url(token_uri, "token_uri")
        http_url(self.api_base_url, "api_base_url")
        self._key = ServiceAccountKey(
            str(email), _private_key(str(pem)), str(key_id), str(token_uri)
        )
        return self

    @property
    def key(self) -> ServiceAccountKey:
        return self._key

    @property
    def api(self) -> str:
        return self.api_base_url.strip().rstrip("/")
