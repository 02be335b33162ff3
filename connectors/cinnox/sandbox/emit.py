"""Emitting a trigger's event on demand: each of CINNOX's Zapier triggers, built from the demo
data, changing the sandbox's state the way the real event would (a missed enquiry exists and can
be fetched afterwards, a deleted contact is gone …), then delivered like any event.

Overrides replace fields of the event body (names matched case-insensitively; ``name`` is the
contact events' ``fullName``). Some also pick or shape the record:

- contacts: ``id`` picks the contact (or names a new one); ``fullName`` names a new contact or
  renames an edited one; ``toOwnerID`` picks the new owner (a staff eid);
- enquiries: ``inquiryID`` / ``displayCaseNumber`` pick the enquiry, or name a new one when no
  enquiry has it; ``channel`` sets a new enquiry's channel; ``eid`` picks the handling staff;
- SMS receipts: ``TransactionID`` picks the SMS sent (default: the last one);
- labels: ``id`` picks the label (or names a new one); ``name`` and ``colorCode`` set them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from connectors.cinnox import wire
from connectors.cinnox.sandbox import demo
from connectors.cinnox.sandbox import records as r
from connectors.cinnox.sandbox.common import (
    SERVICE_ID,
    ControlError,
    iso,
    now_ms,
    object_id,
    region_of,
)
from connectors.cinnox.sandbox.contacts import first_error
from connectors.cinnox.sandbox.events import FAMILY_OF, contact_event, enquiry_event, label_event
from connectors.cinnox.sandbox.store import Doc, Store

if TYPE_CHECKING:
    from connectors.cinnox.sandbox.state import Sandbox


@dataclass
class Emitted:
    """An event to send, and the state change to make once it is known to be valid."""

    event: BaseModel
    apply: Callable[[], Any] = field(default=lambda: None)


Builder = Callable[["Sandbox", dict[str, Any]], Emitted]


# --------------------------------------------------------------------------- contacts


def _pick(store: Store, kind: str, noun: str, o: dict[str, Any], *, last: bool) -> Doc:
    """The record the event is about: ``o["id"]`` if given, else the first (or last) one."""
    if "id" in o:
        found = store.get(kind, str(o["id"]))
        if found is None:
            raise ControlError(f"no {noun} with id {o['id']!r}", 404)
        return found
    records = store.all(kind)
    if not records:
        raise ControlError(f"there are no {noun}s left (zapflow sandbox reset)", 409)
    return records[-1] if last else records[0]


def _contact(store: Store, o: dict[str, Any], *, last: bool = False) -> Doc:
    return _pick(store, r.CONTACT, "external contact", o, last=last)


def _staff(store: Store, eid: str | None = None) -> list[Doc]:
    staff = store.all(r.STAFF)
    if eid is not None and not any(s["eid"] == eid for s in staff):
        raise ControlError(f"no staff member with eid {eid!r}", 404)
    return staff


def new_external_contact(sb: Sandbox, o: dict[str, Any]) -> Emitted:
    store = sb.store
    taken = {r.full_name(c) for c in store.all(r.CONTACT)}
    pool = [p for p in demo.NEW_CONTACTS if f"{p[0]} {p[1]}" not in taken]
    first, last, phone, company = pool[0] if pool else ("Demo", "Contact", None, None)
    last_name: str | None = last
    if "fullName" in o:
        first, last_name = r.split_name(str(o["fullName"]))
    contact_id = str(o.get("id") or object_id())
    if store.get(r.CONTACT, contact_id) is not None:
        raise ControlError(f"an external contact with id {contact_id!r} already exists", 409)
    record: Doc = {
        "id": contact_id,
        "firstName": first,
        "lastName": last_name,
        "mobilePhone": phone,
        "companyName": company,
        "customerType": "Lead",
        "level": "Primary",
        "language": "en",
        "sharedWith": [],
        "slaveContacts": [],
    }
    record = r.set_owner(record, _staff(store)[0])
    return Emitted(contact_event("create", record), lambda: r.save_contact(store, record))


def external_contact_edited(sb: Sandbox, o: dict[str, Any]) -> Emitted:
    record = _contact(sb.store, o)
    if "fullName" in o:
        first, last = r.split_name(str(o["fullName"]))
        edited = {**record, "firstName": first, "lastName": last}
    else:
        levels = ["Primary", "Secondary", "Tertiary"]
        level = str(record.get("level")) if record.get("level") in levels else "Tertiary"
        edited = {**record, "level": levels[(levels.index(level) + 1) % 3]}
    return Emitted(contact_event("edit", edited), lambda: r.save_contact(sb.store, edited))


def external_contact_merged(sb: Sandbox, o: dict[str, Any]) -> Emitted:
    """The picked contact (default: the first) absorbs the last other one."""
    store = sb.store
    master = _contact(store, o)
    others = [c for c in store.all(r.CONTACT) if c["id"] != master["id"]]
    if not others:
        raise ControlError("merging needs two external contacts", 409)
    slave = others[-1]
    merged = {**master, "slaveContacts": [*(master.get("slaveContacts") or []), slave["id"]]}

    def apply() -> None:
        r.save_contact(store, merged)
        store.remove(r.CONTACT, slave["id"])

    return Emitted(contact_event("merge", merged), apply)


def external_contact_ownership_transferred(sb: Sandbox, o: dict[str, Any]) -> Emitted:
    store = sb.store
    record = _contact(store, o)
    wanted = str(o["toOwnerID"]) if "toOwnerID" in o else None
    staff = _staff(store, wanted)
    if wanted is None:
        eids = [s["eid"] for s in staff]
        current = eids.index(record["ownerID"]) if record.get("ownerID") in eids else -1
        wanted = eids[(current + 1) % len(eids)]
    owner = next(s for s in staff if s["eid"] == wanted)
    moved = r.set_owner(record, owner)
    event = contact_event(
        "transfer", moved, fromOwnerID=record.get("ownerID"), toOwnerID=owner["eid"]
    )
    return Emitted(event, lambda: r.save_contact(store, moved))


def external_contact_deleted(sb: Sandbox, o: dict[str, Any]) -> Emitted:
    record = _contact(sb.store, o, last=True)
    return Emitted(
        contact_event("delete", record), lambda: sb.store.remove(r.CONTACT, record["id"])
    )


# --------------------------------------------------------------------------- enquiries


def _enquiry(store: Store, o: dict[str, Any], status: str | None) -> Doc | None:
    """The enquiry the overrides name, else the first in ``status``; None: make a new one."""
    for key in ("inquiryID", "displayCaseNumber"):
        if key in o:
            return r.find_enquiry(store, str(o[key]))
    if status is None:
        return None
    return next((e for e in store.all(r.ENQUIRY) if e["status"] == status), None)


def _new_enquiry(sb: Sandbox, o: dict[str, Any]) -> Doc:
    store = sb.store
    existing = store.all(r.ENQUIRY)
    pool = demo.NEW_ENQUIRIES
    if o.get("channel"):
        # a visitor who came in on that channel, when the pool has one
        pool = [e for e in pool if e[0] == o["channel"]] or pool
    channel, visitor, tag, language, platform = pool[len(existing) % len(pool)]
    channel = str(o.get("channel") or channel)
    if "displayCaseNumber" in o:
        case = str(o["displayCaseNumber"])
        if r.find_enquiry(store, case) is not None:
            raise ControlError(f"an enquiry {case!r} already exists", 409)
    else:
        case = r.next_case_number(store)
        while r.find_enquiry(store, case) is not None:
            case = r.next_case_number(store)
    if "inquiryID" in o and r.find_enquiry(store, str(o["inquiryID"])) is not None:
        raise ControlError(f"an enquiry {o['inquiryID']!r} already exists", 409)
    number = next((n for n in store.all(r.NUMBER) if n["type"] in ("DID", "TF")), None)
    return r.new_enquiry(
        case_number=case,
        channel=channel,
        visitor=visitor,
        at=now_ms(),
        tag=demo.TAGS[tag],
        language=language,
        platform=platform,
        number=number if channel == "Virtual Number" else None,
        inquiry_id=str(o["inquiryID"]) if "inquiryID" in o else None,
    )


def _handler(sb: Sandbox, doc: Doc, o: dict[str, Any]) -> Doc:
    staff = _staff(sb.store, str(o["eid"]) if o.get("eid") else None)
    if o.get("eid"):
        return next(s for s in staff if s["eid"] == o["eid"])
    if doc.get("inquiryType") == "Direct":
        chosen = next((s for s in staff if s["eid"] == doc.get("destinationID")), None)
        if chosen:
            return chosen
    team = doc.get("destinationName")
    return next((s for s in staff if s.get("department") == team), staff[min(1, len(staff) - 1)])


def _enquiry_emitted(sb: Sandbox, doc: Doc) -> Emitted:
    return Emitted(enquiry_event(doc, doc["updatedAt"]), lambda: r.save_enquiry(sb.store, doc))


def new_enquiry(sb: Sandbox, o: dict[str, Any]) -> Emitted:
    return _enquiry_emitted(sb, _new_enquiry(sb, o))


def enquiry_handled(sb: Sandbox, o: dict[str, Any]) -> Emitted:
    doc = _enquiry(sb.store, o, "Opened") or _new_enquiry(sb, o)
    return _enquiry_emitted(sb, r.handle(doc, _handler(sb, doc, o), now_ms()))


def enquiry_closed(sb: Sandbox, o: dict[str, Any]) -> Emitted:
    doc = (
        _enquiry(sb.store, o, "Handling") or _enquiry(sb.store, o, "Opened") or _new_enquiry(sb, o)
    )
    now = now_ms()
    if not doc.get("handledTarget"):
        doc = r.handle(doc, _handler(sb, doc, o), now)
    return _enquiry_emitted(sb, r.close(doc, now))


def missed_enquiry(sb: Sandbox, o: dict[str, Any]) -> Emitted:
    """Misses the enquiry the overrides name, else a new one (so each emit is a fresh case)."""
    doc = _enquiry(sb.store, o, None) or _new_enquiry(sb, o)
    return _enquiry_emitted(sb, r.miss(doc, now_ms()))


# --------------------------------------------------------------------------- SMS receipts

RECEIPTS = {
    # status → (ResponseCode, Exception)
    "Submitted": ("0", None),
    "Delivered": ("0", None),
    "Undelivered": ("1", "Undelivered: the handset is unreachable"),
    "Rejected": ("2", "Rejected: the recipient number is barred by the carrier"),
}


def receipt_status(recipient: str) -> str | None:
    """The receipt a recipient gets in the sandbox (None: no receipt at all)."""
    return {
        demo.UNDELIVERED_NUMBER: "Undelivered",
        demo.REJECTED_NUMBER: "Rejected",
        demo.NO_RECEIPT_NUMBER: None,
    }.get(recipient, "Delivered")


def sms_receipt(app_id: str, transaction: str, recipient: str, status: str) -> wire.SmsReceiptEvent:
    code, exception = RECEIPTS.get(status, ("1", status))
    return wire.SmsReceiptEvent(
        AppID=app_id,
        ServiceID=SERVICE_ID,
        TransactionID=transaction,
        RecipientNumber=recipient,
        RecipientCountry=region_of(recipient),
        ResponseCode=code,
        Status=status,  # type: ignore[arg-type]
        Exception=exception,
    )


def sms_delivery_receipt(sb: Sandbox, o: dict[str, Any]) -> Emitted:
    """A receipt for the SMS named by TransactionID, else the last SMS sent, else a made-up
    one to the first demo contact."""
    sent = sb.store.received("sms")
    if "TransactionID" in o:
        sent = [s for s in sent if s["result"].get("transactionID") == o["TransactionID"]]
    status = str(o.get("Status") or "Delivered")
    if sent:
        sms = sent[0]
        event = sms_receipt(
            sms["appId"], sms["result"]["transactionID"], sms["request"]["recipientNumber"], status
        )
        return Emitted(event, lambda: sb.store.update_received(sms["id"], status=status))
    app_id = sb.store.accounts()[0]["appId"] if sb.store.accounts() else ""
    transaction = str(o.get("TransactionID") or object_id())
    return Emitted(sms_receipt(app_id, transaction, demo.CONTACTS[0]["mobilePhone"], status))


# --------------------------------------------------------------------------- labels


def _label(store: Store, o: dict[str, Any], *, last: bool = False) -> Doc:
    return _pick(store, r.LABEL, "label", o, last=last)


def label_created(sb: Sandbox, o: dict[str, Any]) -> Emitted:
    store = sb.store
    taken = {label["name"] for label in store.all(r.LABEL)}
    pool = [p for p in demo.NEW_LABELS if p[0] not in taken]
    name, color = pool[0] if pool else (f"Label {len(taken) + 1}", "#757575")
    name, color = str(o.get("name") or name), str(o.get("colorCode") or color)
    if name in taken:
        raise ControlError(f"a label named {name!r} already exists", 409)
    label_id = str(o.get("id") or object_id())
    if store.get(r.LABEL, label_id) is not None:
        raise ControlError(f"a label with id {label_id!r} already exists", 409)
    record = r.label_record(label_id, name, color, iso())
    return Emitted(label_event("create", record), lambda: r.save_label(store, record))


def label_edited(sb: Sandbox, o: dict[str, Any]) -> Emitted:
    record = _label(sb.store, o)
    color = record.get("colorCode") or "#757575"
    if "name" not in o and "colorCode" not in o:
        codes = list(r.PALETTE)
        color = codes[(codes.index(color) + 1) % len(codes)] if color in codes else codes[0]
    color = str(o.get("colorCode") or color)
    edited = {
        **r.label_record(record["id"], str(o.get("name") or record["name"]), color, iso()),
        "createdAt": record.get("createdAt"),
    }
    return Emitted(label_event("update", edited), lambda: r.save_label(sb.store, edited))


def label_deleted(sb: Sandbox, o: dict[str, Any]) -> Emitted:
    record = _label(sb.store, o, last=True)
    return Emitted(label_event("deleted", record), lambda: sb.store.remove(r.LABEL, record["id"]))


# --------------------------------------------------------------------------- emitting


@dataclass(frozen=True)
class Trigger:
    model: type[BaseModel]
    build: Builder
    title: str

    @property
    def family(self) -> str:
        return FAMILY_OF[self.model]


TRIGGERS: dict[str, Trigger] = {
    # name → the wire event, its builder, and the seed's trigger name
    "new_external_contact": Trigger(
        wire.ContactEvent, new_external_contact, "New external contact created"
    ),
    "external_contact_edited": Trigger(
        wire.ContactEvent, external_contact_edited, "External contact edited"
    ),
    "external_contact_merged": Trigger(
        wire.ContactEvent, external_contact_merged, "External contact merged"
    ),
    "external_contact_ownership_transferred": Trigger(
        wire.ContactEvent,
        external_contact_ownership_transferred,
        "Transferred external contact ownership",
    ),
    "external_contact_deleted": Trigger(
        wire.ContactEvent, external_contact_deleted, "External contact deleted"
    ),
    "new_enquiry": Trigger(wire.EnquiryEvent, new_enquiry, "New incoming enquiry"),
    "enquiry_handled": Trigger(
        wire.EnquiryEvent, enquiry_handled, "Enquiry being handled by staff (agent)"
    ),
    "enquiry_closed": Trigger(wire.EnquiryEvent, enquiry_closed, "Enquiry closed"),
    "missed_enquiry": Trigger(wire.EnquiryEvent, missed_enquiry, "Missed enquiry"),
    "sms_delivery_receipt": Trigger(
        wire.SmsReceiptEvent, sms_delivery_receipt, "Receive SMS delivery receipts status"
    ),
    "label_created": Trigger(wire.LabelEvent, label_created, "New Label created"),
    "label_edited": Trigger(wire.LabelEvent, label_edited, "Label edited"),
    "label_deleted": Trigger(wire.LabelEvent, label_deleted, "Label deleted"),
}


def triggers() -> list[dict[str, str]]:
    return [{"trigger": name, "family": t.family, "title": t.title} for name, t in TRIGGERS.items()]


def _fields(model: type[BaseModel]) -> type[BaseModel]:
    """The model whose fields the overrides set (a contact event's nested message)."""
    return wire.ContactEventMessage if model is wire.ContactEvent else model


def canonical(model: type[BaseModel], overrides: dict[str, Any]) -> dict[str, Any]:
    """Overrides keyed by the event's own field names; unknown names are refused."""
    target = _fields(model)
    names = {name.lower(): name for name in target.model_fields}
    if target is wire.ContactEventMessage:
        names["name"] = "fullName"
    out = {}
    for key, value in overrides.items():
        name = names.get(key.lower())
        if name is None:
            known = ", ".join(sorted(target.model_fields))
            raise ControlError(f"{key!r} is not a field of this event; its fields: {known}")
        out[name] = value
    return out


def emit(
    sb: Sandbox, trigger: str, overrides: dict[str, Any] | None = None, app_id: str | None = None
) -> dict[str, Any]:
    """Build the trigger's event, change the state, deliver it; what was sent."""
    if trigger not in TRIGGERS:
        raise ControlError(f"unknown trigger {trigger!r}; triggers: {', '.join(TRIGGERS)}", 404)
    model = TRIGGERS[trigger].model
    o = canonical(model, overrides or {})
    emitted = TRIGGERS[trigger].build(sb, o)
    body = emitted.event.model_dump(mode="json", exclude_none=True)
    (body["message"] if model is wire.ContactEvent else body).update(o)
    try:
        event = model.model_validate(body)
    except ValidationError as exc:
        raise ControlError(f"the event would not be valid: {first_error(exc)}") from None
    emitted.apply()
    deliveries = sb.dispatcher.publish(event, app_id=app_id)
    return {
        "trigger": trigger,
        "family": FAMILY_OF[model],
        "event": event.model_dump(mode="json", exclude_none=True),
        "deliveries": deliveries,
    }
