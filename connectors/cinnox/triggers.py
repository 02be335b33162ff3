"""CINNOX triggers: the 13 events of CINNOX's Zapier app, with the Zapier page's keys.

The seed's trigger table (``shared/seed/cinnox-zapier-integration.txt``) is the user-facing
contract: each payload model below has exactly the keys listed there (what a zap reads as
``trigger.<key>``), plus the contact ``id`` on contact triggers (the wire carries it and
``update_external_contact`` needs it). The key ``destination Types`` has a space: zaps read it
as ``trigger['destination Types']``.

CINNOX delivers events per *family* (``wire.EventFamily``) in its own wire shape.
``reading.from_wire`` turns a delivered body into (trigger name, payload in the seed's keys),
tolerantly (every spelling it accepts is listed there); ``to_wire`` is its inverse for the
sandbox, in the shape of ``wire.EnquiryEvent``, ``ContactEvent``, ``SmsReceiptEvent`` and
``LabelEvent``; ``FAMILY_OF`` says which family feeds each trigger, so only the families that
enabled zaps need are subscribed. Every payload has ``extra``: the keys CINNOX sent beyond
the seed's.

Sample conventions (illustrative; CINNOX's real id formats are not public):

- enquiry, contact, staff (owner / destination), label and SMS transaction ids: UUID v4 strings;
- display case numbers: ``ENQ-<year>-<6 digits>``, e.g. ``ENQ-2026-001024``;
- dates: ISO 8601 with the Hong Kong offset, e.g. ``2026-03-02T09:15:27+08:00``;
- phone numbers: E.164, e.g. ``+85291234567``; countries: ISO 3166-1 alpha-2 (``HK``);
- label colours: ``#RRGGBB``.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field, create_model

from connectors.cinnox import wire
from connectors.cinnox._app import app


class UnknownEvent(ValueError):
    """A webhook body that maps to no trigger: unknown family, wrong shape or unknown status."""


class _Payload(BaseModel):
    # Keys outside the models are ignored here: ``reading.from_wire`` puts what CINNOX sent
    # beyond the seed's keys under ``extra``, and the loader checks templates against ours.
    model_config = ConfigDict(populate_by_name=True)


P = TypeVar("P", bound=type[BaseModel])


def _with_extra(model: P) -> P:
    """The payload model with ``extra`` after the seed's keys: what CINNOX sent beyond them."""
    extra: Any = Field(
        default_factory=dict,
        description="Keys CINNOX sent beyond the seed's, as sent (e.g. extra.serviceId); "
        "the status as sent when it was a synonym of the seed's",
    )
    return cast(
        P,
        create_model(
            model.__name__,
            __base__=model,
            __module__=model.__module__,
            __doc__=model.__doc__,
            extra=(dict[str, Any], extra),
        ),
    )


# --------------------------------------------------------------------------- ids used in samples

_STAFF_AMY = "2b7e4f0c-9d13-4a8e-b6c2-5f1a3e9d7c21"
_STAFF_KEN = "8c41d6a2-3e7f-4b95-a0d8-1f6e2c9b4a37"
_STAFF_JOE = "e5d92b17-6a4c-4f08-8b3e-7c2d1a9f6e54"
_TRUNK_HQ = "f0a3c8e1-2b6d-4e97-9c15-3d8a7b2e6f09"  # SIP trunk to the Kwun Tong office PBX

SAMPLE_STAFF: dict[str, tuple[str, str, str]] = {
    _STAFF_AMY: ("Amy", "Lau", "Sales"),
    _STAFF_KEN: ("Ken", "Yip", "Customer Service"),
    _STAFF_JOE: ("Joe", "Tsang", "Customer Service"),
}
"""The staff members the samples name (eid → first name, last name, department); the sandbox
has them too, with every enquiry and contact a sample refers to, so a zap tested on a sample
against the sandbox finds what it looks up (``connectors/cinnox/sandbox/samples.py``)."""


# --------------------------------------------------------------------------- external contacts

_STATUS_DESC = 'Always "{}".'


@_with_extra
class NewExternalContact(_Payload):
    status: Literal["create"] = Field(description=_STATUS_DESC.format("create"))
    name: str | None = Field(
        None, description="The full name of the external contact profile created."
    )
    id: str | None = Field(None, description="The external contact's id in CINNOX.")


@_with_extra
class ExternalContactEdited(_Payload):
    status: Literal["edit"] = Field(description=_STATUS_DESC.format("edit"))
    name: str | None = Field(
        None,
        description="The full name of the contact profile that has been edited successfully.",
    )
    id: str | None = Field(None, description="The external contact's id in CINNOX.")


@_with_extra
class ExternalContactMerged(_Payload):
    status: Literal["merge"] = Field(description=_STATUS_DESC.format("merge"))
    name: str | None = Field(
        None,
        description="The full name of the external contact that has been merged with the other "
        "contact.",
    )
    id: str | None = Field(None, description="The external contact's id in CINNOX.")


@_with_extra
class ExternalContactOwnershipTransferred(_Payload):
    status: Literal["transfer"] = Field(description=_STATUS_DESC.format("transfer"))
    name: str | None = Field(
        None,
        description="The full name of the external contact whose ownership has been transferred.",
    )
    fromOwnerID: str | None = Field(None, description="The previous owner id.")
    toOwnerID: str | None = Field(None, description="The updated owner id.")
    id: str | None = Field(None, description="The external contact's id in CINNOX.")


@_with_extra
class ExternalContactDeleted(_Payload):
    status: Literal["delete"] = Field(description=_STATUS_DESC.format("delete"))
    name: str | None = Field(
        None,
        description="The full name of the contact that has been deleted successfully.",
    )
    id: str | None = Field(None, description="The external contact's id in CINNOX.")


# --------------------------------------------------------------------------- enquiries

_TYPES = "Enquiry type, e.g. Broadcast Chat, Broadcast Call, Direct Chat or Direct Call."
_CHANNELS_NEW = (
    "Channel, e.g. CINNOX, Virtual Number, Email, Third Party Channel, Messenger, WhatsApp, "
    "WeChat, LINE or WOZTELL."
)
_CHANNELS = (
    "Channel, e.g. Directory - Web Link, Campaign, Virtual Number, Messenger, WhatsApp, WeChat, "
    "LINE, WOZTELL, Email or Third Party Channel."
)
_DEST_TRUNK = "Destination type, e.g. STAFF, PSTN or TRUNK."
_DEST_SIP = "Destination type, e.g. STAFF, PSTN or SIP Trunk String."


class _Enquiry(_Payload):
    """The keys every enquiry trigger has, in the seed's order; subclasses narrow ``status`` and
    carry the seed's per-trigger examples for ``channel`` and ``destination Types``."""

    status: str
    enquiryID: str = Field(
        description="Enquiry ID (the display case number when CINNOX sends no id)."
    )
    displayCaseNumber: str | None = Field(
        None, description="Enquiry display number (the case number shown in the Dashboard)."
    )
    type: str | None = Field(None, description=_TYPES)
    channel: str | None = Field(None, description=_CHANNELS)
    date: str | None = Field(None, description="Date & Time.")
    destination: str | None = Field(None, description="Destination id.")
    destination_types: str | None = Field(None, alias="destination Types", description=_DEST_TRUNK)


@_with_extra
class NewEnquiry(_Enquiry):
    status: Literal["Opened"] = Field(description=_STATUS_DESC.format("Opened"))
    channel: str | None = Field(None, description=_CHANNELS_NEW)


@_with_extra
class EnquiryHandled(_Enquiry):
    status: Literal["Handling"] = Field(description=_STATUS_DESC.format("Handling"))
    destination_types: str | None = Field(None, alias="destination Types", description=_DEST_SIP)


@_with_extra
class EnquiryClosed(_Enquiry):
    status: Literal["Closed"] = Field(description=_STATUS_DESC.format("Closed"))
    destination_types: str | None = Field(None, alias="destination Types", description=_DEST_SIP)


@_with_extra
class MissedEnquiry(_Enquiry):
    status: Literal["Missed"] = Field(description=_STATUS_DESC.format("Missed"))


# --------------------------------------------------------------------------- SMS receipts


@_with_extra
class SmsDeliveryReceipt(_Payload):
    transactionId: str = Field(description="The unique transaction id for each SMS.")
    recipientNumber: str | None = Field(None, description="Recipient phone number.")
    recipientCountry: str | None = Field(None, description="Recipient country.")
    responseCode: str | None = Field(None, description="Response code.")
    status: Literal["Submitted", "Delivered", "Undelivered", "Rejected"] = Field(
        description="Receipt status: Submitted, Delivered, Undelivered or Rejected."
    )
    exception: str | None = Field(None, description="Error message (for error responses only).")


# --------------------------------------------------------------------------- labels


@_with_extra
class LabelCreated(_Payload):
    status: Literal["create"] = Field(description=_STATUS_DESC.format("create"))
    id: str | None = Field(None, description="The id of the created label.")
    name: str | None = Field(None, description="The name of the created label.")
    colorCode: str | None = Field(
        None,
        description="The color code of the created label, as a hex colour code (e.g. #E53935).",
    )


@_with_extra
class LabelEdited(_Payload):
    status: Literal["update"] = Field(description=_STATUS_DESC.format("update"))
    id: str | None = Field(None, description="The id of the edited label.")
    name: str | None = Field(None, description="The name of the edited label.")
    colorCode: str | None = Field(
        None,
        description="The colour code of the edited label, as a hex colour code (e.g. #E53935).",
    )


@_with_extra
class LabelDeleted(_Payload):
    status: Literal["deleted"] = Field(description=_STATUS_DESC.format("deleted"))
    id: str | None = Field(None, description="The id of the deleted label.")
    name: str | None = Field(None, description="The name of the deleted label.")


# --------------------------------------------------------------------------- registration

app.trigger(
    "new_external_contact",
    title="New external contact created",
    description="Trigger the action when a new external contact has been created in CINNOX.",
    payload=NewExternalContact,
    samples=[
        {"status": "create", "name": "Chan Tai Man", "id": "5d0c7a3e-1b84-4f6a-9e2d-8c3b7f1a0e65"},
        {"status": "create", "name": "Wong Siu Ming", "id": "a9e1f4b2-7c3d-4e58-b0a6-2d9c5e8f1b73"},
        {"status": "create", "name": "Lee Ka Yan", "id": "3c8b2e6f-0a4d-4b17-8f95-6e1d7a2c9b40"},
    ],
)
app.trigger(
    "external_contact_edited",
    title="External contact edited",
    description="Trigger the action when an external contact has been edited in CINNOX.",
    payload=ExternalContactEdited,
    samples=[
        {"status": "edit", "name": "Chan Tai Man", "id": "5d0c7a3e-1b84-4f6a-9e2d-8c3b7f1a0e65"},
        {"status": "edit", "name": "Cheung Wai Kit", "id": "7f2a9c4e-5b1d-4a86-9e3c-0d8b6f2a1e97"},
    ],
)
app.trigger(
    "external_contact_merged",
    title="External contact merged",
    description="Trigger the action when the external contact has been merged in CINNOX.",
    payload=ExternalContactMerged,
    samples=[
        {"status": "merge", "name": "Wong Siu Ming", "id": "a9e1f4b2-7c3d-4e58-b0a6-2d9c5e8f1b73"},
        {"status": "merge", "name": "Ho Mei Ling", "id": "c4d7e2a9-8f3b-4c61-a5e0-9b2d6f1c3a88"},
    ],
)
app.trigger(
    "external_contact_ownership_transferred",
    title="Transferred external contact ownership",
    description=(
        "Trigger the action when the external contact owner has been transferred to another in "
        "CINNOX."
    ),
    payload=ExternalContactOwnershipTransferred,
    samples=[
        {
            "status": "transfer",
            "name": "Chan Tai Man",
            "fromOwnerID": _STAFF_AMY,
            "toOwnerID": _STAFF_KEN,
            "id": "5d0c7a3e-1b84-4f6a-9e2d-8c3b7f1a0e65",
        },
        {
            "status": "transfer",
            "name": "Lee Ka Yan",
            "fromOwnerID": _STAFF_KEN,
            "toOwnerID": _STAFF_JOE,
            "id": "3c8b2e6f-0a4d-4b17-8f95-6e1d7a2c9b40",
        },
    ],
)
app.trigger(
    "external_contact_deleted",
    title="External contact deleted",
    description="Trigger the action when an external contact has been deleted in CINNOX.",
    payload=ExternalContactDeleted,
    samples=[
        {"status": "delete", "name": "Ho Mei Ling", "id": "c4d7e2a9-8f3b-4c61-a5e0-9b2d6f1c3a88"},
        {"status": "delete", "name": "Test Contact", "id": "0e6b3f9a-2d5c-4a71-8b4e-1f7c9d2a5e36"},
    ],
)

app.trigger(
    "new_enquiry",
    title="New incoming enquiry",
    description="Trigger the action when CINNOX has received a new incoming enquiry to CINNOX.",
    payload=NewEnquiry,
    samples=[
        {
            "status": "Opened",
            "enquiryID": "9b3e7d1f-4a2c-4e86-b5d0-6c1f8a3e2b74",
            "displayCaseNumber": "ENQ-2026-001024",
            "type": "Broadcast Chat",
            "channel": "WhatsApp",
            "date": "2026-03-02T09:15:27+08:00",
            "destination": _STAFF_KEN,
            "destination Types": "STAFF",
        },
        {
            "status": "Opened",
            "enquiryID": "1d8f4c2a-6e3b-4f97-a0c5-7b2e9d4f1a63",
            "displayCaseNumber": "ENQ-2026-001025",
            "type": "Direct Call",
            "channel": "Virtual Number",
            "date": "2026-03-02T09:42:03+08:00",
            "destination": "+85291234567",
            "destination Types": "PSTN",
        },
        {
            "status": "Opened",
            "enquiryID": "6a2c9e4f-3b7d-4a18-9f60-2e5d8b1c7a39",
            "displayCaseNumber": "ENQ-2026-001026",
            "type": "Broadcast Call",
            "channel": "CINNOX",
            "date": "2026-03-02T10:05:51+08:00",
            "destination": None,
            "destination Types": None,
        },
    ],
)
app.trigger(
    "enquiry_handled",
    title="Enquiry being handled by staff (agent)",
    description="Trigger the action when the enquiry has been handled in CINNOX.",
    payload=EnquiryHandled,
    samples=[
        {
            "status": "Handling",
            "enquiryID": "9b3e7d1f-4a2c-4e86-b5d0-6c1f8a3e2b74",
            "displayCaseNumber": "ENQ-2026-001024",
            "type": "Broadcast Chat",
            "channel": "WhatsApp",
            "date": "2026-03-02T09:16:40+08:00",
            "destination": _STAFF_KEN,
            "destination Types": "STAFF",
        },
        {
            "status": "Handling",
            "enquiryID": "4e7b1a9d-8c2f-4d63-b1e5-0a9f3c6d2e81",
            "displayCaseNumber": "ENQ-2026-001031",
            "type": "Direct Call",
            "channel": "Virtual Number",
            "date": "2026-03-02T11:20:12+08:00",
            "destination": _TRUNK_HQ,
            "destination Types": "SIP Trunk String",
        },
    ],
)
app.trigger(
    "enquiry_closed",
    title="Enquiry closed",
    description="Trigger the action when the enquiry has been closed in CINNOX.",
    payload=EnquiryClosed,
    samples=[
        {
            "status": "Closed",
            "enquiryID": "9b3e7d1f-4a2c-4e86-b5d0-6c1f8a3e2b74",
            "displayCaseNumber": "ENQ-2026-001024",
            "type": "Broadcast Chat",
            "channel": "WhatsApp",
            "date": "2026-03-02T09:31:05+08:00",
            "destination": _STAFF_KEN,
            "destination Types": "STAFF",
        },
        {
            "status": "Closed",
            "enquiryID": "2f5d8a1c-7e4b-4c90-a3d6-9b1e5f7c2a48",
            "displayCaseNumber": "ENQ-2026-001037",
            "type": "Direct Chat",
            "channel": "Directory - Web Link",
            "date": "2026-03-02T14:02:47+08:00",
            "destination": _STAFF_AMY,
            "destination Types": "STAFF",
        },
    ],
)
app.trigger(
    "missed_enquiry",
    title="Missed enquiry",
    description="Trigger the action when the enquiry has been missed in CINNOX.",
    payload=MissedEnquiry,
    samples=[
        {
            "status": "Missed",
            "enquiryID": "6a2c9e4f-3b7d-4a18-9f60-2e5d8b1c7a39",
            "displayCaseNumber": "ENQ-2026-001026",
            "type": "Broadcast Call",
            "channel": "Virtual Number",
            "date": "2026-03-02T10:06:36+08:00",
            "destination": "+85223456789",
            "destination Types": "PSTN",
        },
        {
            "status": "Missed",
            "enquiryID": "8d1f6b3a-9c5e-4b72-a4f8-3e0c7d2b9a15",
            "displayCaseNumber": "ENQ-2026-001042",
            "type": "Direct Chat",
            "channel": "Messenger",
            "date": "2026-03-02T22:48:19+08:00",
            "destination": _STAFF_JOE,
            "destination Types": "STAFF",
        },
    ],
)

app.trigger(
    "sms_delivery_receipt",
    title="Receive SMS delivery receipts status",
    description=(
        "Trigger the action when CINNOX has received the status of the SMS delivery receipt."
    ),
    payload=SmsDeliveryReceipt,
    samples=[
        {
            "transactionId": "b7e2d9f4-1a6c-4e38-9d05-8f3a2c7e1b96",
            "recipientNumber": "+85291234567",
            "recipientCountry": "HK",
            "responseCode": "0",
            "status": "Delivered",
            "exception": None,
        },
        {
            "transactionId": "3a9c1e7b-5d2f-4b84-a6e0-1c8d4f9b2e57",
            "recipientNumber": "+85298765432",
            "recipientCountry": "HK",
            "responseCode": "1",
            "status": "Undelivered",
            "exception": "Absent subscriber: the handset is switched off or out of coverage",
        },
        {
            "transactionId": "e4f8b2a6-0c9d-4e15-b7a3-5d1e9c6f2a80",
            "recipientNumber": "+8529123456",
            "recipientCountry": "HK",
            "responseCode": "2",
            "status": "Rejected",
            "exception": "Invalid recipient number",
        },
    ],
)

app.trigger(
    "label_created",
    title="New Label created",
    description="Trigger the action when a new label is created in CINNOX.",
    payload=LabelCreated,
    samples=[
        {
            "status": "create",
            "id": "d3a7f1c9-6b2e-4d80-a5f4-9c1b8e3d7a26",
            "name": "VIP Customer",
            "colorCode": "#E53935",
        },
        {
            "status": "create",
            "id": "5b9e2c6a-8d4f-4a37-b1c0-7e3f6a9d2b58",
            "name": "Follow-up Required",
            "colorCode": "#FB8C00",
        },
    ],
)
app.trigger(
    "label_edited",
    title="Label edited",
    description="Trigger the action when a label is edited in CINNOX.",
    payload=LabelEdited,
    samples=[
        {
            "status": "update",
            "id": "d3a7f1c9-6b2e-4d80-a5f4-9c1b8e3d7a26",
            "name": "VIP Customer (Gold)",
            "colorCode": "#FDD835",
        },
        {
            "status": "update",
            "id": "5b9e2c6a-8d4f-4a37-b1c0-7e3f6a9d2b58",
            "name": "Follow-up in 2 Days",
            "colorCode": "#FB8C00",
        },
    ],
)
app.trigger(
    "label_deleted",
    title="Label deleted",
    description="Trigger the action when a label is deleted in CINNOX.",
    payload=LabelDeleted,
    samples=[
        {"status": "deleted", "id": "5b9e2c6a-8d4f-4a37-b1c0-7e3f6a9d2b58", "name": "Follow-up"},
        {"status": "deleted", "id": "f1c6a3e8-2d9b-4f54-8a7e-0b5c3d1f9e42", "name": "Complaint"},
    ],
)


# --------------------------------------------------------------------------- wire mapping

ENQUIRY_TRIGGERS = {
    "Opened": "new_enquiry",
    "Handling": "enquiry_handled",
    "Closed": "enquiry_closed",
    "Missed": "missed_enquiry",
}
CONTACT_TRIGGERS = {
    "create": "new_external_contact",
    "edit": "external_contact_edited",
    "merge": "external_contact_merged",
    "transfer": "external_contact_ownership_transferred",
    "delete": "external_contact_deleted",
}
LABEL_TRIGGERS = {"create": "label_created", "update": "label_edited", "deleted": "label_deleted"}
SMS_TRIGGER = "sms_delivery_receipt"

FAMILY_OF: dict[str, str] = {
    **dict.fromkeys(CONTACT_TRIGGERS.values(), "external-contact"),
    **dict.fromkeys(ENQUIRY_TRIGGERS.values(), "inquiry"),
    SMS_TRIGGER: "outbound-sms",
    **dict.fromkeys(LABEL_TRIGGERS.values(), "label"),
}
"""The wire family (``PATCH /<family>-event-sub``) that delivers each trigger."""

_WIRE_MODELS: dict[str, type[BaseModel]] = {
    "inquiry": wire.EnquiryEvent,
    "external-contact": wire.ContactEvent,
    "outbound-sms": wire.SmsReceiptEvent,
    "label": wire.LabelEvent,
}


def to_wire(
    trigger: str, payload: dict[str, Any], *, service_id: str, app_id: str
) -> tuple[str, dict[str, Any]]:
    """(family, wire body) CINNOX would deliver for ``trigger`` with ``payload`` (seed keys).

    The inverse of ``reading.from_wire``, for the sandbox. Raises ``UnknownEvent`` for an unknown
    trigger, pydantic's ``ValidationError`` (a ``ValueError``) for a payload that does not fit
    the trigger, and ``ValueError`` for a contact payload without the contact ``id`` (the wire
    always carries it).
    """
    if trigger not in FAMILY_OF:
        raise UnknownEvent(f"unknown CINNOX trigger {trigger!r}; accepted: {', '.join(FAMILY_OF)}")
    family = FAMILY_OF[trigger]
    p = app.triggers[trigger].payload_model.model_validate(payload).model_dump(by_alias=True)
    body: dict[str, Any]
    if family == "inquiry":
        body = {
            "status": p["status"],
            "serviceId": service_id,
            "inquiryID": p["enquiryID"],
            "displayCaseNumber": p["displayCaseNumber"],
            "inquiryType": p["type"],
            "channel": p["channel"],
            "date": p["date"],
            "destination": p["destination"],
            "destinationTypes": p["destination Types"],
        }
    elif family == "external-contact":
        if p["id"] is None:
            raise ValueError(
                f"{trigger}: a contact event on the wire carries the contact id; "
                "the payload has no 'id'"
            )
        message = {
            "status": p["status"],
            "serviceId": service_id,
            "fullName": p["name"],
            "id": p["id"],
            "fromOwnerID": p.get("fromOwnerID"),
            "toOwnerID": p.get("toOwnerID"),
        }
        body = {"message": message}
    elif family == "outbound-sms":
        body = {
            "AppID": app_id,
            "ServiceID": service_id,
            "TransactionID": p["transactionId"],
            "RecipientNumber": p["recipientNumber"],
            "RecipientCountry": p["recipientCountry"],
            "ResponseCode": p["responseCode"],
            "Status": p["status"],
            "Exception": p["exception"],
        }
    else:
        body = {"status": p["status"], "id": p["id"], "name": p["name"]}
        body["colorCode"] = p.get("colorCode")
    event = _WIRE_MODELS[family].model_validate(body)
    return family, event.model_dump(mode="json", by_alias=True, exclude_none=True)
