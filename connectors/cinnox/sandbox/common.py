"""What every sandbox module shares: CINNOX's error reply as an exception, clocks and ids."""

from __future__ import annotations

import re
import secrets
import time
from datetime import UTC, datetime

import phonenumbers

from connectors.cinnox.wire import Code

SERVICE_ID = "hkcc-demo.sandbox"
"""The service account ID of the sandbox's one CINNOX service (``serviceId`` / ``svcID``)."""


class ApiError(Exception):
    """A CINNOX error reply, ``{"code": int, "message": str}``, with its HTTP status."""

    def __init__(
        self, code: int, message: str, status: int = 400, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.code, self.message, self.status = int(code), message, status
        self.headers = headers or {}

    def body(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message}


def param_error(message: str) -> ApiError:
    return ApiError(Code.PARAMETER_ERROR, message)


class ControlError(Exception):
    """A refusal of the control API (``/sandbox/...``): ``{"error": message}`` with a status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.status = message, status


def now_ms() -> int:
    return int(time.time() * 1000)


def iso(ms: int | None = None) -> str:
    """ISO 8601 in UTC with milliseconds, e.g. ``2024-05-01T09:30:00.000Z``."""
    moment = datetime.fromtimestamp((now_ms() if ms is None else ms) / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def object_id() -> str:
    """A new record id shaped like CINNOX's (24 hex digits, a MongoDB ObjectId)."""
    return secrets.token_hex(12)


_E164 = re.compile(r"^\+[1-9]\d{5,14}$")


def is_phone(value: object) -> bool:
    """Whether ``value`` is a phone number in "+country code" form (E.164, no spaces)."""
    if not isinstance(value, str) or not _E164.match(value):
        return False
    try:
        return phonenumbers.is_possible_number(phonenumbers.parse(value, None))
    except phonenumbers.NumberParseException:
        return False


def region_of(phone: str) -> str:
    """The ISO 3166-1 alpha-2 country of a phone number ("" when unknown)."""
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(phone, None)) or ""
    except phonenumbers.NumberParseException:
        return ""
