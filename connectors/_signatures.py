"""Standard Webhooks signatures (https://www.standardwebhooks.com): HMAC-SHA256 over
``{webhook-id}.{webhook-timestamp}.{body}``, sent as ``webhook-signature: v1,<base64>``.

Part of the connector contract: the receiver checks deliveries to catch hooks that ask for it
(``flows.intake.receiver``), and the HTTP app signs the webhooks it sends.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping

TOLERANCE_SECONDS = 300


class SignatureError(ValueError):
    """A delivery's signature is missing, wrong, or too old; the message says which."""


def _key(secret: str) -> bytes:
    raw = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(raw, validate=True)
    except ValueError:
        return raw.encode()  # a plain-text secret, as some senders use


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(
    secret: str, headers: Mapping[str, str], body: bytes, *, now: float | None = None
) -> str:
    """Check a delivery; return its ``webhook-id`` (the sender's delivery id)."""
    msg_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp")
    given = headers.get("webhook-signature")
    if not (msg_id and stamp and given):
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise SignatureError("webhook-timestamp is not a Unix time in seconds") from None
    now = time.time() if now is None else now
    if abs(now - timestamp) > TOLERANCE_SECONDS:
        raise SignatureError(
            f"webhook-timestamp is more than {TOLERANCE_SECONDS} s away from now (a replay?)"
        )
    expected = sign(secret, msg_id, timestamp, body)
    for candidate in given.split():
        if hmac.compare_digest(candidate, expected):
            return msg_id
    raise SignatureError("webhook-signature does not match")
