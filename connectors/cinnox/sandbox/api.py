"""The CINNOX API as ``wire.py`` describes it: one handler per path, each answering the reply
fields (``code`` is added by the app) or raising ``ApiError`` with CINNOX's code and message."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, get_args

from pydantic import ValidationError
from starlette.requests import Request

from connectors.cinnox import wire
from connectors.cinnox.sandbox import contacts, emit
from connectors.cinnox.sandbox import records as r
from connectors.cinnox.sandbox.common import (
    SERVICE_ID,
    ApiError,
    is_phone,
    iso,
    now_ms,
    object_id,
    param_error,
    region_of,
)
from connectors.cinnox.sandbox.events import contact_event, verify_url
from connectors.cinnox.sandbox.store import Doc
from connectors.cinnox.sms import segments

if TYPE_CHECKING:
    from connectors.cinnox.sandbox.state import Sandbox

Code = wire.Code


@dataclass
class Call:
    """One authenticated API request."""

    request: Request
    sandbox: Sandbox
    account: Doc
    params: dict[str, str]

    @property
    def app_id(self) -> str:
        return str(self.account["appId"])

    def query(self, name: str) -> str | None:
        return self.request.query_params.get(name)

    async def json(self) -> Any:
        raw = await self.request.body()
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            raise param_error("the body is not valid JSON") from None


Handler = Callable[[Call], Awaitable[Doc]]


def _int(call: Call, name: str, default: int) -> int:
    raw = call.query(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise param_error(f"invalid {name} {raw!r}") from None


def paging(call: Call) -> tuple[int, int]:
    """``offset`` and ``limit`` (default 50, at most 500)."""
    offset = _int(call, "offset", 0)
    limit = _int(call, "limit", wire.LIST_LIMIT_DEFAULT)
    if offset < 0:
        raise param_error(f"invalid offset {offset}")
    if limit < 1:
        raise param_error(f"invalid limit {limit}")
    if limit > wire.LIST_LIMIT_MAX:
        raise param_error(f"limit exceed maximum limit {wire.LIST_LIMIT_MAX}")
    return offset, limit


def listing(total: int, items: list[Doc]) -> Doc:
    return {"total": total, "result": items}


# --------------------------------------------------------------------------- enquiries


async def enquiry_detail(call: Call) -> Doc:
    ref = (call.query("enquiryID") or "").strip()
    if not ref:
        raise param_error("enquiryID is required")
    doc = r.find_enquiry(call.sandbox.store, ref)
    if doc is None:
        raise param_error("invalid enquiryID")
    return r.enquiry_reply(doc, call.sandbox.base_url(call.request))


# --------------------------------------------------------------------------- contacts


def _received_contact(call: Call, raw: Any, record: Doc, action: str) -> None:
    call.sandbox.store.add_received(
        "contact",
        call.app_id,
        raw,
        {"id": record["id"], "action": action, "fullName": r.full_name(record)},
        call.request.headers.get("idempotency-key"),
    )


async def create_contact(call: Call) -> Doc:
    raw = await call.json()
    body = contacts.parse(raw)
    fields = contacts.changes(body)
    if not (fields.get("firstName") or fields.get("lastName")):
        raise param_error("firstName or lastName is required")
    store = call.sandbox.store
    record: Doc = {"id": object_id(), "sharedWith": [], "slaveContacts": [], **fields}
    record = r.set_owner(record, store.all(r.STAFF)[0])
    r.save_contact(store, record)
    _received_contact(call, raw, record, "create")
    call.sandbox.dispatcher.publish(contact_event("create", record))
    return {"id": record["id"]}


async def update_contact(call: Call) -> Doc:
    store = call.sandbox.store
    record = store.get(r.CONTACT, call.params["contact_id"])
    if record is None:
        raise param_error("invalid contactID")
    raw = await call.json()
    fields = contacts.changes(contacts.parse(raw))
    if "addresses" in fields:
        given = {k: v for k, v in fields["addresses"].items() if v is not None}
        fields["addresses"] = {**(record.get("addresses") or {}), **given}
    record = {**record, **fields}
    r.save_contact(store, record)
    _received_contact(call, raw, record, "update")
    call.sandbox.dispatcher.publish(contact_event("edit", record))
    return {"id": record["id"]}


async def contact_list(call: Call) -> Doc:
    offset, limit = paging(call)
    name = call.query("fullName")
    total, items = call.sandbox.store.page(
        r.CONTACT, lookup=name.strip() if name else None, offset=offset, limit=limit
    )
    return listing(total, items)


async def staff_list(call: Call) -> Doc:
    offset, limit = paging(call)
    name = call.query("fullName")
    total, items = call.sandbox.store.page(
        r.STAFF, lookup=name.strip() if name else None, offset=offset, limit=limit
    )
    return listing(total, items)


# --------------------------------------------------------------------------- messaging


def direct_room(eid: str) -> str:
    """The room of the integration's direct chat with a staff member (stable per eid)."""
    return hashlib.sha256(f"direct:{eid}".encode()).hexdigest()[:24]


async def message_push(call: Call) -> Doc:
    raw = await call.json()
    if not isinstance(raw, dict):
        raise param_error("the body must be a JSON object")
    messages = raw.get("messages")
    if not messages:
        raise param_error("messages is required")
    if isinstance(messages, list):
        if len(messages) > wire.IM_MAX_MESSAGES:
            raise param_error(f"messages exceed maximum limit {wire.IM_MAX_MESSAGES}")
        for n, message in enumerate(messages):
            text = message.get("text") if isinstance(message, dict) else None
            if isinstance(text, str) and len(text) > wire.IM_MAX_CHARS:
                raise param_error(f"messages.{n}.text exceed maximum limit {wire.IM_MAX_CHARS}")
    try:
        push = wire.MessagePush.model_validate(raw)
    except ValidationError as exc:
        raise param_error(contacts.first_error(exc)) from None
    if any(not m.text.strip() for m in push.messages):
        raise param_error("text is required")
    store = call.sandbox.store
    if push.senderEID and store.get(r.STAFF, push.senderEID) is None:
        raise param_error("invalid senderEID")
    if push.roomID and push.receiverEID:
        raise param_error("give roomID or receiverEID, not both")
    if push.roomID:
        room = store.get(r.ROOM, push.roomID)
        if room is None:
            raise ApiError(Code.DESTINATION_NOT_FOUND, "destination not found")
        room_id, to = push.roomID, room["name"]
    elif push.receiverEID:
        staff = store.get(r.STAFF, push.receiverEID)
        if staff is None:
            raise ApiError(Code.DESTINATION_NOT_FOUND, "destination not found")
        room_id, to = direct_room(push.receiverEID), r.full_name(staff)
    else:
        raise param_error("roomID or receiverEID is required")
    result = {"messageID": object_id(), "roomID": room_id}
    store.add_received(
        "im", call.app_id, raw, {**result, "to": to}, call.request.headers.get("idempotency-key")
    )
    return {"result": result}


# --------------------------------------------------------------------------- SMS

SENDER_TYPES = {"Virtual Number": ("DID", "TF"), "Service Number": ("CUSTOM", "ALPHANUMERIC")}


async def send_sms(call: Call) -> Doc:
    raw = await call.json()
    try:
        sms = wire.SendSms.model_validate(raw)
    except ValidationError as exc:
        raise param_error(contacts.first_error(exc)) from None
    store = call.sandbox.store
    sender = store.get(r.NUMBER, sms.senderNumber)
    if sender is None:
        raise param_error(
            f"Invalid senderNumber: {sms.senderNumber} is not a number of this account"
        )
    if sender["type"] not in SENDER_TYPES[sms.numberType]:
        raise param_error(
            f"Invalid senderNumber: {sms.senderNumber} ({sender['type']}) is not a {sms.numberType}"
        )
    if not sender.get("supportSMS"):
        raise param_error(f"Invalid senderNumber: {sms.senderNumber} does not support SMS")
    if not is_phone(sms.recipientNumber):
        raise param_error(
            f"Invalid recipientNumber {sms.recipientNumber!r}: use +country code and number"
        )
    if not sms.text:
        raise param_error("text is required")
    cost = segments(sms.text)
    transaction = str(uuid.uuid4())
    received = store.add_received(
        "sms",
        call.app_id,
        raw,
        {
            "transactionID": transaction,
            "status": "Submitted",
            "segments": cost.segments,
            "encoding": cost.encoding,
            "recipientCountry": region_of(sms.recipientNumber),
        },
        call.request.headers.get("idempotency-key"),
    )
    status = emit.receipt_status(sms.recipientNumber)
    if status is not None:
        call.sandbox.spawn(
            _receipt_later(
                call.sandbox, received, call.app_id, transaction, sms.recipientNumber, status
            )
        )
    return {"serviceID": SERVICE_ID, "status": "Submitted", "transactionID": transaction}


async def _receipt_later(
    sandbox: Sandbox, received: int, app_id: str, transaction: str, recipient: str, status: str
) -> None:
    await asyncio.sleep(sandbox.config.sms_receipt_delay)
    sandbox.store.update_received(received, status=status)
    sandbox.dispatcher.publish(emit.sms_receipt(app_id, transaction, recipient, status))


# --------------------------------------------------------------------------- numbers, labels

NUMBER_TYPES = {
    "access-numbers": ("DID", "TF"),
    "cli": ("CUSTOM",),
    "sms-numbers": ("ALPHANUMERIC",),
}


async def number_list(call: Call) -> Doc:
    offset, limit = paging(call)
    wanted = NUMBER_TYPES[call.params["number_type"]]
    found = [n for n in call.sandbox.store.all(r.NUMBER) if n["type"] in wanted]
    return listing(len(found), found[offset : offset + limit])


async def labels(call: Call) -> Doc:
    offset, limit = paging(call)
    found = call.sandbox.store.all(r.LABEL)
    if call.query("id"):
        found = [label for label in found if label["id"] == call.query("id")]
    if call.query("name"):
        found = [label for label in found if label["name"] == call.query("name")]
    return listing(len(found), [r.label_reply(x) for x in found[offset : offset + limit]])


# --------------------------------------------------------------------------- event subscriptions


async def event_sub(call: Call) -> Doc:
    family = call.params["family"]
    try:
        sub = wire.EventSubscription.model_validate(await call.json())
    except ValidationError as exc:
        raise param_error(contacts.first_error(exc)) from None
    sandbox = call.sandbox
    at = now_ms()
    if sub.enabled:
        await verify_url(sandbox.dispatcher.http(), sub.url, sandbox.config.challenge_timeout)
        at = sandbox.store.subscribe(call.app_id, family, sub.url)  # what a GET then answers
    else:
        sandbox.store.unsubscribe(call.app_id, family)
    return {"enabled": sub.enabled, "url": sub.url, "updatedAt": iso(at)}


async def event_sub_state(call: Call) -> Doc:
    """``GET /{family}-event-sub`` (a GUESS, see ``wire.EVENT_SUB_GET``): the account's stored
    subscription to the family; one it does not have (or ended) is ``enabled: false``."""
    found = call.sandbox.store.subscriptions(call.params["family"], call.app_id)
    if not found:
        return {"enabled": False, "url": None, "updatedAt": None}
    return {"enabled": True, "url": found[0]["url"], "updatedAt": found[0]["updatedAt"]}


# --------------------------------------------------------------------------- routing


def _pattern(template: str) -> re.Pattern[str]:
    """A wire path template as a regex; ``{number_type}`` and ``{family}`` match only the
    values wire.py allows."""
    choices = {
        "number_type": "|".join(map(re.escape, get_args(wire.NumberType))),
        "family": "|".join(map(re.escape, get_args(wire.EventFamily))),
    }
    out, pos = "", 0
    for m in re.finditer(r"\{(\w+)\}", template):
        out += re.escape(template[pos : m.start()])
        out += f"(?P<{m[1]}>{choices.get(m[1], '[^/]+')})"
        pos = m.end()
    return re.compile(out + re.escape(template[pos:]) + "$")


ROUTES: list[tuple[str, re.Pattern[str], Handler]] = [
    ("GET", _pattern(wire.ENQUIRY_DETAIL), enquiry_detail),
    ("POST", _pattern(wire.CREATE_CONTACT), create_contact),
    ("PUT", _pattern(wire.UPDATE_CONTACT), update_contact),
    ("GET", _pattern(wire.CONTACT_LIST), contact_list),
    ("GET", _pattern(wire.STAFF_LIST), staff_list),
    ("POST", _pattern(wire.MESSAGE_PUSH), message_push),
    ("POST", _pattern(wire.SEND_SMS), send_sms),
    ("GET", _pattern(wire.LABELS), labels),
    ("GET", _pattern(wire.NUMBER_LIST), number_list),
    ("PATCH", _pattern(wire.EVENT_SUB), event_sub),
    ("GET", _pattern(wire.EVENT_SUB_GET), event_sub_state),
]


def route(method: str, path: str) -> tuple[Handler, dict[str, str]]:
    """The handler of ``method path`` (path relative to the API prefix), or 6450001."""
    allowed = False
    for verb, pattern, handler in ROUTES:
        m = pattern.match(path)
        if m:
            if verb == method:
                return handler, m.groupdict()
            allowed = True
    status = 405 if allowed else 404
    raise ApiError(Code.METHOD_NOT_FOUND, f"method not found: {method} {path}", status)
