"""The records the CINNOX triggers' samples refer to, seeded into the sandbox beside the demo
data: every enquiry (by its ``enquiryID`` and ``displayCaseNumber``), every external contact (by
``id`` and full name) and every staff member a sample names. So ``zapflow test`` on a trigger's
sample, against a fresh sandbox, finds what its steps look up (Get Enquiry detail, Get External
Contact Detail, IM to the contact's new owner …).

Read from the trigger definitions themselves (``app.triggers[...].samples``), so a sample that
changes changes what the sandbox holds; nothing here repeats an id.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from connectors.cinnox._app import app
from connectors.cinnox.sandbox import records as r
from connectors.cinnox.sandbox.store import Doc, Store
from connectors.cinnox.triggers import (
    CONTACT_TRIGGERS,
    ENQUIRY_TRIGGERS,
    SAMPLE_STAFF,
)

MINUTE = 60_000


def _millis(text: str | None, fallback: int) -> int:
    if not text:
        return fallback
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return fallback


def _samples(triggers: Any) -> list[Doc]:
    return [dict(s) for name in triggers for s in app.triggers[name].samples]


def staff() -> list[Doc]:
    return [
        {
            "eid": eid,
            "firstName": first,
            "lastName": last,
            "email": f"{first.lower()}.{last.lower()}@hkcare.example",
            "department": department,
            "jobTitle": "Customer Service Officer"
            if "Service" in department
            else "Sales Executive",
            "role": "Staff",
        }
        for eid, (first, last, department) in SAMPLE_STAFF.items()
    ]


def contacts(owners: dict[str, Doc], default_owner: Doc) -> list[Doc]:
    """One contact per sample id (but those a delete sample names), owned as the latest transfer
    sample says (else the default owner)."""
    found: dict[str, Doc] = {}
    deleted = {s.get("id") for s in app.triggers[CONTACT_TRIGGERS["delete"]].samples}
    for sample in _samples(CONTACT_TRIGGERS.values()):
        if not sample.get("id") or sample["id"] in deleted:
            continue  # a contact a sample deletes is gone from CINNOX too
        first, last = r.split_name(sample.get("name") or "Sample Contact")
        record = found.setdefault(
            sample["id"],
            {
                "id": sample["id"],
                "firstName": first,
                "lastName": last,
                "language": "en",
                "sharedWith": [],
                "slaveContacts": [],
            },
        )
        owner = owners.get(sample.get("toOwnerID") or "")
        found[sample["id"]] = r.set_owner(record, owner or default_owner)
    return list(found.values())


def enquiries(now: int, tag: Doc, staff_by_eid: dict[str, Doc], default_staff: Doc) -> list[Doc]:
    """One enquiry per sample ``enquiryID``, in the status of its latest sample."""
    by_id: dict[str, list[Doc]] = {}
    for sample in _samples(ENQUIRY_TRIGGERS.values()):
        if sample.get("enquiryID"):
            by_id.setdefault(sample["enquiryID"], []).append(sample)
    docs = []
    for enquiry_id, samples in by_id.items():
        samples.sort(key=lambda s: _millis(s.get("date"), now))
        first, last = samples[0], samples[-1]
        kind = str(first.get("type") or "Broadcast Chat")
        at = _millis(first.get("date"), now - 10 * MINUTE)
        handler = staff_by_eid.get(str(last.get("destination") or ""), default_staff)
        doc = r.new_enquiry(
            case_number=str(first.get("displayCaseNumber") or enquiry_id),
            channel=str(first.get("channel") or "CINNOX"),
            visitor={"name": "Sample Visitor"},
            at=at,
            tag=tag,
            staff=handler if kind.startswith("Direct") else None,
            inquiry_type="Direct" if kind.startswith("Direct") else "Broadcast",
            init_channel="CALL" if kind.endswith("Call") else "IM",
            inquiry_id=enquiry_id,
        )
        when = _millis(last.get("date"), at)
        if last["status"] == "Handling":
            doc = r.handle(doc, handler, when)
        elif last["status"] == "Closed":
            doc = r.close(r.handle(doc, handler, at), when)
        elif last["status"] == "Missed":
            doc = r.miss(doc, when)
        docs.append(doc)
    return docs


def seed(store: Store, *, now: int, tag: Doc, demo_staff: list[Doc]) -> None:
    """Add the samples' records to a store the demo data has just filled."""
    sample_staff = staff()
    for member in sample_staff:
        store.put(r.STAFF, member["eid"], member, lookup=r.full_name(member))
    everyone = {s["eid"]: s for s in [*demo_staff, *sample_staff]}
    default = sample_staff[0] if sample_staff else demo_staff[0]
    for contact in contacts(everyone, default):
        r.save_contact(store, contact)
    for doc in enquiries(now, tag, everyone, default):
        r.save_enquiry(store, doc)
