"""The sandbox's records in their wire shapes, and how they change: kinds and lookups, enquiry
documents and their status changes (Opened → Handling → Closed, or Missed), contact names,
label colours. Used by the demo data, the API and the emitted events alike."""

from __future__ import annotations

from typing import Any

from connectors.cinnox.sandbox.common import SERVICE_ID, object_id
from connectors.cinnox.sandbox.store import Doc, Store

STAFF, CONTACT, ENQUIRY, ROOM, NUMBER, LABEL = (
    "staff",
    "contact",
    "enquiry",
    "room",
    "number",
    "label",
)
KINDS = {
    # the control API's plural → (record kind, its key field)
    "staff": (STAFF, "eid"),
    "contacts": (CONTACT, "id"),
    "enquiries": (ENQUIRY, "inquiry"),
    "rooms": (ROOM, "roomID"),
    "numbers": (NUMBER, "number"),
    "labels": (LABEL, "id"),
}

STATUSES = ("Opened", "Handling", "Closed", "Missed")

# channel → (omniType, the usual initChannel)
CHANNELS: dict[str, tuple[str, str]] = {
    "Virtual Number": ("CINNOX", "CALL"),
    "Web Link": ("CINNOX", "IM"),
    "Directory": ("CINNOX", "CALL"),
    "Campaign": ("CINNOX", "IM"),
    "WhatsApp": ("WHATSAPP", "IM"),
    "Messenger": ("FACEBOOK", "IM"),
    "WeChat": ("WECHAT", "IM"),
    "LINE": ("LINE", "IM"),
    "Email": ("EMAIL", "IM"),
    "Third Party Channel": ("THIRDPARTY", "IM"),
    "WOZTELL": ("THIRDPARTY", "IM"),
}

PALETTE = {
    "#E53935": "Red",
    "#FB8C00": "Orange",
    "#F4B400": "Yellow",
    "#43A047": "Green",
    "#00897B": "Teal",
    "#1E88E5": "Blue",
    "#8E24AA": "Purple",
    "#757575": "Grey",
}


def full_name(record: Doc) -> str:
    """ "First{SPACE}Last", the form CINNOX's contact search matches exactly."""
    return " ".join(p for p in (record.get("firstName"), record.get("lastName")) if p)


def split_name(name: str) -> tuple[str, str | None]:
    """First word is the first name, the rest the last name."""
    first, _, last = name.strip().partition(" ")
    return first, (last.strip() or None)


def staff_name(staff: Doc) -> str:
    return full_name(staff)


# --------------------------------------------------------------------------- contacts


def save_contact(store: Store, record: Doc) -> Doc:
    return store.put(CONTACT, record["id"], record, lookup=full_name(record))


def set_owner(record: Doc, staff: Doc) -> Doc:
    return {
        **record,
        "ownerID": staff["eid"],
        "ownerName": staff_name(staff),
        "ownerDepartment": staff.get("department"),
    }


# --------------------------------------------------------------------------- enquiries


def save_enquiry(store: Store, doc: Doc) -> Doc:
    return store.put(ENQUIRY, doc["inquiry"], doc, lookup=doc["displayCaseNumber"])


def find_enquiry(store: Store, ref: str) -> Doc | None:
    """By enquiry id or displayCaseNumber (as ``enquiryID`` accepts either)."""
    return store.get(ENQUIRY, ref) or store.find(ENQUIRY, ref)


def next_case_number(store: Store) -> str:
    return f"C{store.next_value('case_number', 100211)}"


def new_enquiry(
    *,
    case_number: str,
    channel: str,
    visitor: Doc,
    at: int,
    tag: Doc,
    staff: Doc | None = None,
    inquiry_type: str = "Broadcast",
    init_channel: str | None = None,
    language: str = "en",
    platform: str = "web",
    number: Doc | None = None,
    inquiry_id: str | None = None,
) -> Doc:
    """An enquiry as it arrives (Opened). ``visitor`` has ``name`` and optionally ``phone``,
    ``socialId``, ``ip``; ``staff`` is the staff a Direct enquiry goes to."""
    omni, usual = CHANNELS.get(channel, ("THIRDPARTY", "IM"))
    first, last = split_name(visitor["name"])
    if inquiry_type == "Direct" and staff is not None:
        destination = {
            "destinationID": staff["eid"],
            "destinationName": staff_name(staff),
            "destinationType": "STAFF",
            "destinationEndPoint": staff["eid"],
        }
        detail = {"type": "Staff", "id": staff["eid"], "maaiiDisplayName": staff_name(staff)}
    else:
        destination = {
            "destinationID": tag["id"],
            "destinationName": tag["name"],
            "destinationType": "STAFF",
            "destinationEndPoint": number["number"] if number else None,
        }
        detail = {"type": "Tag", "id": tag["id"], "maaiiDisplayName": tag["name"]}
    if number is not None:
        detail = {
            "type": "Virtual Number",
            "id": number["number"],
            "maaiiDisplayName": number.get("name"),
        }
    return {
        "_id": object_id(),
        "uniqueKey": object_id(),
        "createdAT": at,
        "svcID": SERVICE_ID,
        "inquiry": inquiry_id or object_id(),
        "tag": tag["id"],
        "visitor": visitor.get("id") or object_id(),
        "roomID": object_id(),
        "initChannel": init_channel or usual,
        "omniType": omni,
        "ip": visitor.get("ip", "203.198.7.42"),
        "language": language,
        "location": "Hong Kong" if visitor.get("region", "HK") == "HK" else visitor["region"],
        "locationDetail": {
            "regionCode": visitor.get("region", "HK"),
            "subdivision": None,
            "city": visitor.get("city", "Hong Kong"),
            "province": None,
        },
        "platform": platform,
        "status": "Opened",
        "closedByType": None,
        "displayCaseNumber": case_number,
        "channel": channel,
        **destination,
        "handledType": None,
        "handledTarget": None,
        "handledPartyName": None,
        "huntedStaffTargetHistory": [],
        "channelDetail": detail,
        "inquiryType": inquiry_type,
        "updatedAt": at,
        "closedAt": None,
        "inquiryGroup": {"id": tag["id"], "name": tag["name"]},
        "transferredParty": None,
        "pickedUpAt": None,
        "missedAt": None,
        "reopenedAt": None,
        "handledPartyDepartment": None,
        "visitorName": visitor["name"],
        "closeDuration": None,
        "historyJoined": [],
        "attachment": False,
        "staffFirstName": None,
        "staffLastName": None,
        "visitorFirstName": first,
        "visitorLastName": last,
        "inquiryDeepLink": None,
        "cid": object_id(),
        # not part of the detail reply: what an enquiry event carries besides it
        "_socialId": visitor.get("socialId"),
    }


def handle(doc: Doc, staff: Doc, at: int) -> Doc:
    """A staff member picks the enquiry up (Handling)."""
    hunted = list(doc.get("huntedStaffTargetHistory") or [])
    joined = list(doc.get("historyJoined") or [])
    return {
        **doc,
        "status": "Handling",
        "handledType": "STAFF",
        "handledTarget": staff["eid"],
        "handledPartyName": staff_name(staff),
        "handledPartyDepartment": staff.get("department"),
        "staffFirstName": staff.get("firstName"),
        "staffLastName": staff.get("lastName"),
        "huntedStaffTargetHistory": hunted + [staff["eid"]] * (staff["eid"] not in hunted),
        "historyJoined": joined + [staff["eid"]] * (staff["eid"] not in joined),
        "pickedUpAt": at,
        "updatedAt": at,
    }


def forward_to_phone(doc: Doc, phone: str, name: str, at: int) -> Doc:
    """A call answered on a PSTN phone the enquiry was forwarded to."""
    return {
        **doc,
        "status": "Handling",
        "destinationID": phone,
        "destinationName": name,
        "destinationType": "PHONE",
        "destinationEndPoint": phone,
        "handledType": "Phone",
        "handledTarget": phone,
        "handledPartyName": name,
        "pickedUpAt": at,
        "updatedAt": at,
    }


def close(doc: Doc, at: int, by: str = "staff") -> Doc:
    started = doc.get("pickedUpAt") or doc.get("createdAT") or at
    return {
        **doc,
        "status": "Closed",
        "closedByType": by,
        "closedAt": at,
        "closeDuration": max(0, at - started),
        "updatedAt": at,
    }


def miss(doc: Doc, at: int) -> Doc:
    return {**doc, "status": "Missed", "missedAt": at, "updatedAt": at}


def enquiry_reply(doc: Doc, base_url: str) -> Doc:
    """The enquiry-detail reply's fields (without ``code``)."""
    out = {k: v for k, v in doc.items() if not k.startswith("_") or k == "_id"}
    if not out.get("inquiryDeepLink"):
        out["inquiryDeepLink"] = f"{base_url}/sandbox/data/enquiries?id={doc['inquiry']}"
    return out


# --------------------------------------------------------------------------- labels


def label_record(label_id: str, name: str, color_code: str, at: str) -> Doc:
    """A label as the store keeps it: the wire Label plus its colour code (label events)."""
    return {
        "id": label_id,
        "name": name,
        "colorName": PALETTE.get(color_code.upper(), color_code),
        "colorCode": color_code,
        "createdAt": at,
        "updatedAt": at,
    }


def label_reply(record: Doc) -> Doc:
    """A label as /labels lists it (wire.Label)."""
    return {k: record.get(k) for k in ("id", "name", "colorName", "createdAt", "updatedAt")}


def save_label(store: Store, record: Doc) -> Doc:
    return store.put(LABEL, record["id"], record, lookup=record["name"])


def public(record: Doc) -> dict[str, Any]:
    """A record without the sandbox's own bookkeeping keys (those starting with "_")."""
    return {k: v for k, v in record.items() if not k.startswith("_") or k == "_id"}
