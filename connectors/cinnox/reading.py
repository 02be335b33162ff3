"""How a CINNOX webhook delivery is read: every spelling, coercion and status, in one place.

Nobody here has seen a live CINNOX delivery: ``shared/cinnox-api.md`` gathers public fragments
that disagree with each other and with the seed's Zapier keys (the enquiry id travels as
``inquiryID`` in one, is absent from another; a label's colour is ``colorName`` on the API and
``colorCode`` in the seed). So the reading is tolerant, and all it tolerates is written here:

- **Keys** are compared without regard to case, spaces, underscores and dashes (``inquiryID``,
  ``inquiryId`` and ``inquiry_id`` are one key); each seed key is read from the first of its
  spellings in ``SPELLINGS`` that the body has. A body wrapped in an envelope (``message`` or
  ``data`` holding the event, as contact events are) is read inside it.
- **Values**: a number or true/false where the seed's key is text is taken as its text
  (``ResponseCode: 0`` → ``"0"``); a date given as epoch seconds or milliseconds becomes
  ISO 8601 in UTC.
- **Statuses** are compared without regard to case, with the synonyms in ``STATUSES``
  (``updated`` → ``update``, SMPP's ``DELIVRD`` → ``Delivered``); the status as sent is kept
  under ``extra`` when it was not the seed's own word.
- **Everything else is kept**: each key the reading did not use goes, as sent, under the
  payload's ``extra`` (``trigger.extra.serviceId``).
- **Unreadable** — an unknown family or status, nothing that identifies the event, an object
  where text belongs — raises ``UnknownEvent`` with the reason. The receiver then keeps the
  delivery as *unrecognised* (it is never refused or dropped); once this file reads it,
  ``zapflow reprocess`` runs its zaps.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from connectors.cinnox._app import app
from connectors.cinnox.triggers import (
    CONTACT_TRIGGERS,
    ENQUIRY_TRIGGERS,
    LABEL_TRIGGERS,
    SMS_TRIGGER,
    UnknownEvent,
)

FAMILIES = ("inquiry", "external-contact", "outbound-sms", "label")
"""The families a zap can be triggered by (``triggers.FAMILY_OF``)."""

SPELLINGS: dict[str, dict[str, tuple[str, ...]]] = {
    # seed key: its spellings, normalised (lower case, letters and digits only), first wins.
    "inquiry": {
        "status": ("status", "inquirystatus", "enquirystatus"),
        # public: none (the enquiry webhook's documented keys carry no id); GUESS: inquiryID
        # (the API's own spelling: /inquiries/{inquiryID}), the seed's enquiryID, and
        # `inquiry` as in the enquiry-detail reply.
        "enquiryID": ("enquiryid", "inquiryid", "inquiry", "enquiry"),
        "displayCaseNumber": ("displaycasenumber", "casenumber"),
        # `type` is the event kind ("inquiry") in the public payload; when it is anything else
        # it is the enquiry type (see _enquiry).
        "type": ("inquirytype", "enquirytype"),
        "channel": ("channel",),
        "date": ("date", "datetime", "timestamp", "eventtime"),
        "destination": ("destination", "destinationid"),
        "destination Types": ("destinationtypes", "destinationtype"),
    },
    "external-contact": {
        "status": ("status",),
        "name": ("fullname", "name", "displayname", "contactname"),
        "id": ("id", "contactid", "externalcontactid", "extcontactid"),
        "fromOwnerID": ("fromownerid", "previousownerid", "oldownerid"),
        "toOwnerID": ("toownerid", "newownerid"),
    },
    "outbound-sms": {
        "transactionId": ("transactionid",),
        "recipientNumber": ("recipientnumber", "recipient"),
        "recipientCountry": ("recipientcountry",),
        "responseCode": ("responsecode",),
        "status": ("status", "deliverystatus"),
        "exception": ("exception", "error", "errormessage"),
    },
    "label": {
        "status": ("status",),
        "id": ("id", "labelid"),
        "name": ("name", "labelname"),
        # public: colorName (the labels API); seed: colorCode.
        "colorCode": ("colorcode", "colorname", "color", "colour", "colourcode"),
    },
}

STATUSES: dict[str, dict[str, str]] = {
    # normalised spelling: the seed's status.
    "inquiry": {
        **dict.fromkeys(("opened", "open"), "Opened"),
        **dict.fromkeys(("handling", "handled"), "Handling"),
        **dict.fromkeys(("closed", "close"), "Closed"),
        **dict.fromkeys(("missed", "miss"), "Missed"),
    },
    "external-contact": {
        **dict.fromkeys(("create", "created", "add", "added"), "create"),
        **dict.fromkeys(("edit", "edited", "update", "updated"), "edit"),
        **dict.fromkeys(("merge", "merged"), "merge"),
        **dict.fromkeys(("transfer", "transferred"), "transfer"),
        **dict.fromkeys(("delete", "deleted", "remove", "removed"), "delete"),
    },
    "outbound-sms": {
        # The seed's four, and SMPP delivery-receipt states (ACCEPTD, DELIVRD …).
        **dict.fromkeys(("submitted", "accepted", "acceptd", "enroute", "sent"), "Submitted"),
        **dict.fromkeys(("delivered", "delivrd"), "Delivered"),
        **dict.fromkeys(("undelivered", "undeliv", "expired", "failed"), "Undelivered"),
        **dict.fromkeys(("rejected", "rejectd"), "Rejected"),
    },
    "label": {
        **dict.fromkeys(("create", "created"), "create"),
        **dict.fromkeys(("update", "updated", "edit", "edited"), "update"),
        **dict.fromkeys(("deleted", "delete", "removed"), "deleted"),
    },
}

TRIGGER_OF: dict[str, Callable[[str], str]] = {
    "inquiry": ENQUIRY_TRIGGERS.__getitem__,
    "external-contact": CONTACT_TRIGGERS.__getitem__,
    "outbound-sms": lambda _status: SMS_TRIGGER,
    "label": LABEL_TRIGGERS.__getitem__,
}

# Keys whose value only says what kind of event this is: read, not kept under extra.
_KIND_MARKERS = {"type": {"inquiry", "enquiry", "message", "contact", "tdr", "label"}}
_ENVELOPES = ("message", "data")
_NOT_KEY = re.compile(r"[^a-z0-9]")


def normal(key: str) -> str:
    """A key as ``SPELLINGS`` lists it: lower case, letters and digits only."""
    return _NOT_KEY.sub("", key.lower())


class _Body:
    """A delivered body's keys by their normal form; what is read is taken out of it."""

    def __init__(self, family: str, body: dict[str, Any]) -> None:
        self.family = family
        self.keys: dict[str, str] = {}
        self.values: dict[str, Any] = {}
        self.outer: dict[str, Any] = {}
        self.envelope: str | None = None
        inner = self._envelope(body)
        if inner is not None:
            self.envelope, content = inner
            self.outer = {k: v for k, v in body.items() if k != self.envelope}
            body = content
        for key, value in body.items():
            self.keys.setdefault(normal(key), key)
            self.values.setdefault(key, value)

    def _envelope(self, body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """(key, content) of the envelope holding the event, when the body has one and no
        status of its own."""
        if any(normal(k) in SPELLINGS[self.family]["status"] for k in body):
            return None
        for key, value in body.items():
            if normal(key) in _ENVELOPES and isinstance(value, dict):
                return key, value
        return None

    def take(self, seed_key: str) -> tuple[str | None, Any]:
        """(the key as sent, its value) of the first spelling of ``seed_key`` the body has."""
        for spelling in SPELLINGS[self.family][seed_key]:
            key = self.keys.pop(spelling, None)
            if key is not None:
                return key, self.values.pop(key)
        return None, None

    def pop(self, key: str) -> Any:
        """The value of ``key`` (as sent), taken out."""
        del self.keys[normal(key)]
        return self.values.pop(key)

    def text(self, seed_key: str) -> str | None:
        key, value = self.take(seed_key)
        return as_text(value, key or seed_key)

    def rest(self) -> dict[str, Any]:
        """The keys not read (kind markers left out), as sent: the payload's ``extra``."""
        extra = {k: v for k, v in self.outer.items() if not _marker(k, v)}
        extra |= {k: v for k, v in self.values.items() if not _marker(k, v)}
        return extra


def _marker(key: str, value: Any) -> bool:
    markers = _KIND_MARKERS.get(normal(key))
    return markers is not None and isinstance(value, str) and normal(value) in markers


def as_text(value: Any, key: str) -> str | None:
    """A value where the seed's key is text: numbers and true/false as their text."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    raise UnknownEvent(
        f"{key} is {'an object' if isinstance(value, dict) else 'a list'} where CINNOX's "
        f"text was expected: {_short(value)}"
    )


def as_date(value: Any, key: str) -> str | None:
    """A date: text as sent; epoch seconds or milliseconds as ISO 8601 in UTC."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value / 1000 if abs(value) >= 100_000_000_000 else value
        try:
            return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")
        except (OverflowError, OSError, ValueError):
            raise UnknownEvent(f"{key} {value!r} is not a date") from None
    return as_text(value, key)


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _status(body: _Body) -> tuple[str, dict[str, Any]]:
    """(the seed's status, {key: status} as sent when it was not the seed's word);
    UnknownEvent if there is none."""
    key, value = body.take("status")
    known = STATUSES[body.family]
    seed = known.get(normal(value)) if isinstance(value, str) else None
    if seed is None:
        where = key or "status"
        if body.envelope is not None:
            where = f"{body.envelope}.{where}"
        accepted = ", ".join(dict.fromkeys(known.values()))
        raise UnknownEvent(
            f"CINNOX {body.family} event has {where} {_short(value)}, which starts no "
            f"trigger; accepted: {accepted}",
        )
    return seed, ({} if value == seed else {key or "status": value})


def _enquiry(body: _Body, status: str) -> dict[str, Any]:
    payload: dict[str, Any] = {"status": status}
    payload["enquiryID"] = body.text("enquiryID")
    payload["displayCaseNumber"] = body.text("displayCaseNumber")
    enquiry_type = body.text("type")
    if enquiry_type is None:
        key = body.keys.get("type")
        if key is not None and not _marker(key, body.values[key]):
            enquiry_type = as_text(body.pop(key), key)
    payload["type"] = enquiry_type
    payload["channel"] = body.text("channel")
    key, date = body.take("date")
    payload["date"] = as_date(date, key or "date")
    payload["destination"] = body.text("destination")
    payload["destination Types"] = body.text("destination Types")
    if payload["enquiryID"] is None:
        # GUESS: CINNOX's enquiry APIs take a display case number wherever they take an
        # enquiry id (enquiry-chat does, publicly), so it stands in for a missing id.
        payload["enquiryID"] = payload["displayCaseNumber"]
    if payload["enquiryID"] is None:
        raise UnknownEvent("the enquiry event has neither an enquiry id nor a displayCaseNumber")
    return payload


def _contact(body: _Body, status: str) -> dict[str, Any]:
    payload: dict[str, Any] = {"status": status, "name": body.text("name"), "id": body.text("id")}
    if payload["name"] is None:
        given = [body.keys.get(k) for k in ("firstname", "lastname")]
        parts = [as_text(body.pop(k), k) for k in given if k is not None]
        payload["name"] = " ".join(p for p in parts if p) or None
    if payload["name"] is None and payload["id"] is None:
        raise UnknownEvent("the contact event has neither a contact id nor a name")
    if status == "transfer":
        payload["fromOwnerID"] = body.text("fromOwnerID")
        payload["toOwnerID"] = body.text("toOwnerID")
    return payload


def _receipt(body: _Body, status: str) -> dict[str, Any]:
    payload = {
        "transactionId": body.text("transactionId"),
        "recipientNumber": body.text("recipientNumber"),
        "recipientCountry": body.text("recipientCountry"),
        "responseCode": body.text("responseCode"),
        "status": status,
        "exception": body.text("exception"),
    }
    if payload["transactionId"] is None:
        raise UnknownEvent("the SMS receipt has no TransactionID")
    return payload


def _label(body: _Body, status: str) -> dict[str, Any]:
    payload: dict[str, Any] = {"status": status, "id": body.text("id"), "name": body.text("name")}
    if status != "deleted":  # a deleted label's colour, if sent, stays under extra
        payload["colorCode"] = body.text("colorCode")
    if payload["id"] is None and payload["name"] is None:
        raise UnknownEvent("the label event has neither a label id nor a name")
    return payload


_READERS: dict[str, Callable[[_Body, str], dict[str, Any]]] = {
    "inquiry": _enquiry,
    "external-contact": _contact,
    "outbound-sms": _receipt,
    "label": _label,
}


def _errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(body)'}: {e['msg']}"
        for e in exc.errors(include_url=False)
    )


def from_wire(family: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(trigger name, payload in the seed's keys) for a CINNOX webhook body of ``family``.

    The payload is the trigger's payload model dumped by alias: every seed key present
    (``None`` where CINNOX sent nothing) and ``extra`` holding the keys not read. Raises
    ``UnknownEvent`` (a ``ValueError``) with the reason when the body cannot be read.
    """
    if family not in _READERS:
        raise UnknownEvent(
            f"unknown CINNOX event family {family!r}; accepted: {', '.join(FAMILIES)}"
        )
    if not isinstance(body, dict):
        raise UnknownEvent(
            f"a CINNOX {family} event must be a JSON object, not {type(body).__name__}"
        )
    reading = _Body(family, body)
    status, as_sent = _status(reading)
    payload = _READERS[family](reading, status)
    payload["extra"] = as_sent | reading.rest()
    name = TRIGGER_OF[family](status)
    model = app.triggers[name].payload_model
    try:
        event = model.model_validate(payload)
    except ValidationError as exc:  # only a bug in the readers above can get here
        raise UnknownEvent(
            f"the CINNOX {family} event does not fit trigger {name}: {_errors(exc)}"
        ) from None
    dumped = event.model_dump(mode="json", by_alias=True)
    dumped["extra"] = dumped.pop("extra")  # last: after the seed's keys
    return name, dumped


def occurrence(family: str, payload: dict[str, Any]) -> str | None:
    """What identifies the occurrence an event reports, for de-duplicating redeliveries.

    Enquiry events (id, status, date) and SMS receipts (transaction, status) carry it; contact
    and label events do not (two identical edits look the same), so those are never
    de-duplicated: a redelivery runs again rather than risk dropping a real event.
    """
    if family == "inquiry" and payload.get("enquiryID") and payload.get("date"):
        return f"inquiry:{payload['enquiryID']}:{payload['status']}:{payload['date']}"
    if family == "outbound-sms" and payload.get("transactionId"):
        return f"tdr:{payload['transactionId']}:{payload['status']}"
    return None
