"""Events the sandbox sends: the wire event bodies, CINNOX's URL verification (the challenge
handshake) and webhook delivery with retries, each delivery recorded in the store."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import httpx
from pydantic import BaseModel

from connectors.cinnox import wire
from connectors.cinnox.sandbox import records as r
from connectors.cinnox.sandbox.common import SERVICE_ID, iso, param_error
from connectors.cinnox.sandbox.store import Doc, Store

log = logging.getLogger("zapflow.sandbox")

FAMILY_OF: dict[type[BaseModel], str] = {
    wire.EnquiryEvent: "inquiry",
    wire.ContactEvent: "external-contact",
    wire.SmsReceiptEvent: "outbound-sms",
    wire.LabelEvent: "label",
}
USER_AGENT = "zapflow-cinnox-sandbox"
_DESTINATION_TYPES = {"PHONE": "PSTN", "STAFF": "STAFF", "TRUNK": "TRUNK"}


# --------------------------------------------------------------------------- event bodies


def enquiry_event(doc: Doc, at: int) -> wire.EnquiryEvent:
    """An ``inquiry`` event for an enquiry in its current status."""
    kind = "Call" if doc.get("initChannel") == "CALL" else "Chat"
    handler = doc.get("handledTarget") if doc.get("handledType") == "STAFF" else None
    return wire.EnquiryEvent(
        status=doc["status"],
        serviceId=SERVICE_ID,
        inquiryID=doc["inquiry"],
        displayCaseNumber=doc["displayCaseNumber"],
        inquiryType=f"{doc.get('inquiryType') or 'Broadcast'} {kind}",
        channel=doc["channel"],
        channelOri=doc.get("omniType"),
        socialId=doc.get("_socialId"),
        eid=handler,
        date=iso(at),
        destination=doc.get("destinationID"),
        destinationTypes=_DESTINATION_TYPES.get(doc.get("destinationType") or ""),
    )


def contact_event(status: str, record: Doc, **owners: str | None) -> wire.ContactEvent:
    return wire.ContactEvent(
        message=wire.ContactEventMessage(
            status=status,  # type: ignore[arg-type]
            serviceId=SERVICE_ID,
            fullName=r.full_name(record),
            id=record["id"],
            **owners,
        )
    )


def label_event(status: str, record: Doc) -> wire.LabelEvent:
    return wire.LabelEvent(
        status=status,  # type: ignore[arg-type]
        id=record["id"],
        name=record["name"],
        colorCode=record.get("colorCode"),
    )


# --------------------------------------------------------------------------- URL verification


async def verify_url(client: httpx.AsyncClient, url: str, timeout: float) -> None:
    """CINNOX's URL verification: POST a challenge, expect it echoed as ``challenge_reply``.
    Raises a 6451000 parameter error saying what went wrong."""
    if not url.startswith(("http://", "https://")):
        raise param_error(f"url verification failed: {url!r} is not an http(s) URL")
    challenge = secrets.token_urlsafe(24)
    try:
        reply = await client.post(
            url, json=wire.Challenge(challenge=challenge).model_dump(), timeout=timeout
        )
    except httpx.TimeoutException:
        raise param_error(f"url verification failed: no answer within {timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise param_error(f"url verification failed: {type(exc).__name__}: {exc}") from None
    if not reply.is_success:
        raise param_error(f"url verification failed: the URL answered HTTP {reply.status_code}")
    try:
        body = reply.json()
    except ValueError:
        body = None
    if body != wire.challenge_reply(challenge):
        raise param_error(
            "url verification failed: the reply must be "
            '{"code": 0, "result": {"challenge": "<the challenge sent>"}}'
        )


# --------------------------------------------------------------------------- delivery

Spawn = Callable[[Coroutine[Any, Any, Any]], Any]


class Dispatcher:
    """Sends each event to the subscribed URL of its family of every (or one) account, in the
    background, retrying failures after ``retry_delays`` seconds (one more attempt per delay)."""

    def __init__(
        self,
        store: Store,
        spawn: Spawn,
        *,
        retry_delays: Sequence[float] = (1.0, 4.0, 16.0),
        timeout: float = 10.0,
    ) -> None:
        self.store, self.spawn = store, spawn
        self.retry_delays, self.timeout = tuple(retry_delays), timeout
        self.client: httpx.AsyncClient | None = None

    def http(self) -> httpx.AsyncClient:
        # Created lazily, inside the server's event loop (a client belongs to its loop).
        if self.client is None:
            self.client = httpx.AsyncClient(headers={"User-Agent": USER_AGENT})
        return self.client

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    def publish(self, event: BaseModel, app_id: str | None = None) -> list[int]:
        """Queue ``event`` for every subscriber of its family (only ``app_id``'s if given);
        returns the delivery ids."""
        family = FAMILY_OF[type(event)]
        body = event.model_dump(mode="json", by_alias=True, exclude_none=True)
        ids = []
        for sub in self.store.subscriptions(family=family, app_id=app_id):
            delivery = self.store.add_delivery(sub["appId"], family, sub["url"], body)
            ids.append(delivery)
            self.spawn(self._deliver(delivery, sub["appId"], family, sub["url"], body))
        return ids

    async def _deliver(self, delivery: int, app_id: str, family: str, url: str, body: Doc) -> None:
        delays = (0.0, *self.retry_delays)
        for attempt, delay in enumerate(delays, start=1):
            if delay:
                await asyncio.sleep(delay)
                if self.store.subscription_url(app_id, family) != url:
                    # Unsubscribed, or the account was deleted: CINNOX stops sending.
                    self.store.update_delivery(
                        delivery, state="cancelled", last_error="the subscription ended"
                    )
                    return
            status, error = None, None
            try:
                reply = await self.http().post(url, json=body, timeout=self.timeout)
                status = reply.status_code
                if not reply.is_success:
                    error = f"HTTP {status}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            last = attempt == len(delays)
            state = "delivered" if error is None else ("failed" if last else "pending")
            self.store.update_delivery(
                delivery, attempts=attempt, last_status=status, last_error=error, state=state
            )
            if error is None:
                return
            log.info("delivery %s to %s failed (attempt %s): %s", delivery, url, attempt, error)
