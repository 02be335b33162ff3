"""The demo data: a Hong Kong contact centre ("HK Care") with its staff, external contacts,
enquiries in every status across channels, Spaces, numbers, sender ids and labels.

Ids are fixed so a zap, a test or the README can name them; times are relative to when the
sandbox was seeded so the data always looks recent. The pools at the end feed the records that
``emit`` creates (new contacts, enquiries, labels).
"""

from __future__ import annotations

from typing import Any

from connectors.cinnox.sandbox import records as r
from connectors.cinnox.sandbox import samples
from connectors.cinnox.sandbox.common import SERVICE_ID, iso, now_ms
from connectors.cinnox.sandbox.store import Doc, Store

DEFAULT_ACCOUNT = "zapflow"

# SMS to these recipients get a recognisable receipt (every other recipient: Delivered).
UNDELIVERED_NUMBER = "+85291000001"
REJECTED_NUMBER = "+85291000002"
NO_RECEIPT_NUMBER = "+85291000003"  # stays Submitted: no receipt ever arrives

MINUTE = 60_000
HOUR = 60 * MINUTE


def _staff(n: int, first: str, last: str, department: str, title: str, role: str) -> Doc:
    return {
        "eid": f"60d5ec49f1a2c3b4d5e6f7{n:02d}",
        "firstName": first,
        "lastName": last,
        "email": f"{first.lower()}.{last.lower()}@hkcare.example",
        "department": department,
        "jobTitle": title,
        "role": role,
    }


STAFF = [
    _staff(1, "Sharon", "Kwan", "Customer Care", "Contact Centre Manager", "Administrator"),
    _staff(2, "Candy", "Chow", "Customer Care", "Customer Service Officer", "Staff"),
    _staff(3, "Derek", "Fung", "Sales", "Account Manager", "Staff"),
    _staff(4, "Eva", "Mak", "Customer Care", "Customer Service Officer", "Staff"),
    _staff(5, "Tommy", "Siu", "Technical Support", "Support Engineer", "Staff"),
    _staff(6, "Grace", "Lo", "Sales", "Sales Executive", "Staff"),
    _staff(7, "Ricky", "Yuen", "Technical Support", "Team Lead", "Supervisor"),
    _staff(8, "Hazel", "Tam", "Customer Care", "Senior Officer (Cantonese, Mandarin)", "Staff"),
]
EID = {s["firstName"].lower(): s["eid"] for s in STAFF}

ROOMS: list[Doc] = [
    {
        "roomID": "6601b7e2a9c84d3f5e0d1a01",
        "name": "Customer Care HK",
        "members": [EID["sharon"], EID["candy"], EID["eva"], EID["hazel"]],
    },
    {
        "roomID": "6601b7e2a9c84d3f5e0d1a02",
        "name": "Sales Team",
        "members": [EID["sharon"], EID["derek"], EID["grace"]],
    },
    {
        "roomID": "6601b7e2a9c84d3f5e0d1a03",
        "name": "Escalations",
        "members": [EID["sharon"], EID["tommy"], EID["ricky"]],
    },
]

TAGS = {
    "care": {"id": "5e8f1a2b3c4d5e6f7a8b9c01", "name": "Customer Care"},
    "sales": {"id": "5e8f1a2b3c4d5e6f7a8b9c02", "name": "Sales"},
    "support": {"id": "5e8f1a2b3c4d5e6f7a8b9c03", "name": "Technical Support"},
}


def _number(number: str, kind: str, name: str, sms: bool, call: bool, country: str = "HK") -> Doc:
    return {
        "serviceID": SERVICE_ID,
        "number": number,
        "type": kind,
        "country": country,
        "expireDate": "2027-03-31",
        "name": name,
        "supportSMS": sms,
        "supportCall": call,
    }


NUMBERS = [
    _number("+85235009000", "DID", "Hotline (Hong Kong)", sms=True, call=True),
    _number("+85239001234", "DID", "Sales direct line", sms=False, call=True),
    _number("+852800906000", "TF", "Toll-free hotline", sms=False, call=True),
    _number("+6562238888", "DID", "Singapore office", sms=True, call=True, country="SG"),
    _number("+85236200000", "CUSTOM", "Customer care caller ID", sms=True, call=True),
    _number("+85236200001", "CUSTOM", "Collections caller ID", sms=False, call=True),
    _number("HKCARE", "ALPHANUMERIC", "HK Care sender ID", sms=True, call=False),
    _number("ZAPFLOW", "ALPHANUMERIC", "zapflow alerts", sms=True, call=False),
]
HOTLINE = NUMBERS[0]


# id suffix | first | last | mobile | company | job title | customer type | level | owner
_CONTACT_TABLE = """
01 | Peter   | Chan   | +85291234567 | Harbour Logistics Ltd     | Operations Manager | Customer | Primary   | candy
02 | Mandy   | Wong   | +85262345678 | Kowloon Dental Clinic     | Practice Manager   | Customer | Primary   | hazel
03 | Kelvin  | Lee    | +85298765432 | Pearl River Trading Co.   | Purchasing Officer | Prospect | Secondary | derek
04 | Winnie  | Cheung | +85263456789 | Tsim Sha Tsui Travel      | Director           | Lead     | Primary   | grace
05 | Jason   | Lau    | +85294567123 | Sai Kung Seafood          | Owner              | Customer | Tertiary  | candy
06 | Cecilia | Ho     | +85297654321 | Victoria Peak Realty      | Property Agent     | Lead     | Secondary | grace
07 | Ivan    | Ng     | +85253001234 | Shatin Tech Park          | IT Manager         | Prospect | Secondary | tommy
08 | Karen   | Tsang  | +85293456712 | Causeway Bay Boutique     | Store Manager      | Customer | Primary   | eva
09 | Alan    | Leung  | +85266778899 | Lantau Tours              | Tour Guide         | Others   | Tertiary  | eva
10 | Fiona   | Yip    | +85254001234 | Central Law Chambers      | Paralegal          | Customer | Secondary | hazel
11 | Gary    | Kwok   | +85268889999 | Mong Kok Mobile Repair    | Owner              | Lead     | Tertiary  | derek
12 | Joyce   | Lam    | +6591234567  | Lion City Imports Pte Ltd | Buyer              | Prospect | Secondary | derek
"""  # noqa: E501


def _hk(street: str, city: str, state: str) -> Doc:
    return {"street": street, "city": city, "state": state, "zipcode": None, "country": "Hong Kong"}


# What some contacts have beyond the table: social ids, addresses, other phones and emails.
_CONTACT_EXTRAS: dict[str, Doc] = {
    "01": {
        "whatsApp": "+85291234567",
        "group": "Key accounts",
        "department": "Operations",
        "addresses": _hk("18 Harbour Road", "Wan Chai", "Hong Kong Island"),
    },
    "02": {
        "language": "zh-hant",
        "birthday": "14/02/1985",
        "addresses": _hk("88 Nathan Road", "Tsim Sha Tsui", "Kowloon"),
    },
    "03": {"workPhone": "+85223456789"},
    "04": {"weChat": "winnie_tst_travel", "language": "zh-hant"},
    "05": {"addresses": _hk("12 Hoi Pong Street", "Sai Kung", "New Territories")},
    "06": {"line": "cecilia.ho.realty"},
    "07": {"linkedin": "ivan-ng-hk"},
    "08": {"facebook": "karen.tsang.cwb"},
    "10": {"personalEmail": "fiona.yip@mail.example"},
    "12": {
        "addresses": {
            "street": "1 Raffles Place",
            "city": "Singapore",
            "state": None,
            "zipcode": "048616",
            "country": "Singapore",
        }
    },
}


def _contacts() -> list[Doc]:
    staff = {s["firstName"].lower(): s for s in STAFF}
    out = []
    for line in _CONTACT_TABLE.strip().splitlines():
        n, first, last, phone, company, title, kind, level, owner = (
            cell.strip() for cell in line.split("|")
        )
        record: Doc = {
            "id": f"64f0c2a7b1d3e5f7a9c0b1{n}",
            "firstName": first,
            "lastName": last,
            "mobilePhone": phone,
            "email": f"{first.lower()}.{last.lower()}@{company.split()[0].lower()}.example",
            "companyName": company,
            "jobTitle": title,
            "customerType": kind,
            "level": level,
            "language": "en",
            "sharedWith": [],
            "slaveContacts": [],
            **_CONTACT_EXTRAS.get(n, {}),
        }
        out.append(r.set_owner(record, staff[owner]))
    return out


CONTACTS = _contacts()

LABELS = [
    ("65a1f0c2d3e4b5a6c7d8e901", "VIP", "#F4B400"),
    ("65a1f0c2d3e4b5a6c7d8e902", "Complaint", "#E53935"),
    ("65a1f0c2d3e4b5a6c7d8e903", "Follow-up", "#1E88E5"),
    ("65a1f0c2d3e4b5a6c7d8e904", "Sales lead", "#43A047"),
    ("65a1f0c2d3e4b5a6c7d8e905", "Cantonese", "#8E24AA"),
]

AFTER_HOURS_PHONE = "+85261234567"


def _visitor(contact_no: int, **extra: object) -> Doc:
    c = CONTACTS[contact_no - 1]
    return {"name": r.full_name(c), "phone": c["mobilePhone"], "id": c["id"], **extra}


def _enquiries(now: int) -> list[Doc]:
    """Ten enquiries, C100201 … C100210, in all four statuses across channels."""
    staff = {s["firstName"].lower(): s for s in STAFF}
    care, sales, support = TAGS["care"], TAGS["sales"], TAGS["support"]

    def make(case: int, channel: str, visitor: Doc, ago: int, tag: Doc, **kw: Any) -> Doc:
        return r.new_enquiry(
            case_number=f"C{case}", channel=channel, visitor=visitor, at=now - ago, tag=tag, **kw
        )

    e1 = make(
        100201, "Virtual Number", _visitor(1), 6 * MINUTE, care, number=HOTLINE, platform="pstn"
    )
    e2 = make(
        100202,
        "WhatsApp",
        _visitor(5, socialId="85294567123"),
        4 * MINUTE,
        care,
        platform="android",
    )
    e3 = make(
        100203,
        "Web Link",
        {"name": "Visitor 4821", "ip": "42.3.118.20"},
        35 * MINUTE,
        sales,
        platform="web",
    )
    e3 = r.handle(e3, staff["derek"], e3["createdAT"] + 40_000)
    e4 = make(
        100204,
        "Messenger",
        _visitor(8, socialId="karen.tsang.cwb"),
        20 * MINUTE,
        care,
        platform="ios",
    )
    e4 = r.handle(e4, staff["eva"], e4["createdAT"] + 25_000)
    e5 = make(100205, "Email", _visitor(10), 26 * HOUR, care, platform="email")
    e5 = r.close(r.handle(e5, staff["hazel"], e5["createdAT"] + 2 * HOUR), now - 20 * HOUR)
    e6 = make(
        100206,
        "WeChat",
        _visitor(4, socialId="winnie_tst_travel"),
        5 * HOUR,
        sales,
        language="zh-hant",
        platform="ios",
    )
    e6 = r.close(
        r.handle(e6, staff["grace"], e6["createdAT"] + MINUTE), now - 4 * HOUR, by="visitor"
    )
    e7 = make(
        100207, "Virtual Number", _visitor(3), 14 * HOUR, care, number=HOTLINE, platform="pstn"
    )
    e7 = r.close(
        r.forward_to_phone(e7, AFTER_HOURS_PHONE, "After-hours mobile", e7["createdAT"] + 30_000),
        e7["createdAT"] + 9 * MINUTE,
    )
    e8 = make(
        100208, "Virtual Number", _visitor(11), 2 * HOUR, care, number=HOTLINE, platform="pstn"
    )
    e8 = r.miss(e8, e8["createdAT"] + MINUTE)
    e9 = make(
        100209,
        "LINE",
        _visitor(6, socialId="cecilia.ho.realty"),
        50 * MINUTE,
        support,
        platform="android",
    )
    e9 = r.miss(e9, e9["createdAT"] + 3 * MINUTE)
    e10 = make(
        100210,
        "Directory",
        _visitor(7),
        2 * MINUTE,
        support,
        staff=staff["tommy"],
        inquiry_type="Direct",
        platform="web",
    )
    docs = [e1, e2, e3, e4, e5, e6, e7, e8, e9, e10]
    for n, doc in enumerate(docs, start=1):
        doc["inquiry"] = f"66b2d4f6a8c0e1f3a5b7c9{n:02d}"  # fixed ids, like the other records
    return docs


def seed(store: Store) -> None:
    """Fill an empty store with the demo data."""
    now = now_ms()
    for staff in STAFF:
        store.put(r.STAFF, staff["eid"], staff, lookup=r.full_name(staff))
    for room in ROOMS:
        store.put(r.ROOM, room["roomID"], {**room, "type": "space"}, lookup=room["name"])
    for number in NUMBERS:
        store.put(r.NUMBER, number["number"], number, lookup=number["type"])
    for n, (label_id, name, color) in enumerate(LABELS):
        r.save_label(store, r.label_record(label_id, name, color, iso(now - (30 - n) * 24 * HOUR)))
    for contact in CONTACTS:
        r.save_contact(store, contact)
    for doc in _enquiries(now):
        r.save_enquiry(store, doc)
    # what the CINNOX triggers' samples refer to, so zaps tested on a sample find it here
    samples.seed(store, now=now, tag=TAGS["care"], demo_staff=STAFF)


# --------------------------------------------------------------------------- pools for emit

NEW_CONTACTS = [
    ("Tony", "Chiu", "+85291000101", "Aberdeen Boatyard Ltd"),
    ("Bonnie", "Szeto", "+85296000001", "Stanley Bakery"),
    ("Raymond", "Mok", "+85298000001", "Kwun Tong Printing"),
    ("Queenie", "Fong", "+85265000001", "Happy Valley Florist"),
    ("Edmund", "Tse", "+85292222222", "Tsuen Wan Motors"),
    ("Iris", "Choi", "+85261110001", "Tai Po Pharmacy"),
    ("Samuel", "Yeung", "+85291230001", "North Point Fitness"),
    ("Vivian", "Kwan", "+85291230002", "Sheung Wan Tea House"),
]

NEW_LABELS = [
    ("Urgent", "#E53935"),
    ("Refund request", "#FB8C00"),
    ("Mandarin", "#00897B"),
    ("Returning customer", "#1E88E5"),
    ("Feedback", "#757575"),
]

# channel, visitor, tag key, language, platform: new enquiries cycle through these
NEW_ENQUIRIES = [
    ("Virtual Number", {"name": "Tony Chiu", "phone": "+85291000101"}, "care", "en", "pstn"),
    ("WhatsApp", {"name": "Bonnie Szeto", "socialId": "85296000001"}, "care", "zh-hant", "android"),
    ("Web Link", {"name": "Visitor 5307", "ip": "112.118.40.9"}, "sales", "en", "web"),
    ("Messenger", {"name": "Raymond Mok", "socialId": "raymond.mok.ktp"}, "care", "en", "ios"),
    ("Email", {"name": "Queenie Fong"}, "care", "en", "email"),
    ("LINE", {"name": "Iris Choi", "socialId": "iris.choi.tp"}, "support", "zh-hant", "ios"),
    ("WeChat", {"name": "Vivian Kwan", "socialId": "vivian_sw_tea"}, "sales", "zh-hans", "ios"),
]
