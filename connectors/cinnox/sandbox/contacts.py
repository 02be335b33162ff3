"""External contacts through the API: checking a create/update body the way CINNOX does (the
seed's limits, "+country code" phones, dd/mm/yyyy birth dates) and turning it into the stored
record (the shape extcontact-list returns)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from connectors.cinnox import wire
from connectors.cinnox.sandbox.common import is_phone, param_error
from connectors.cinnox.sandbox.store import Doc

LIMITS = {
    "firstName": 50,
    "lastName": 50,
    "company": 100,
    "jobTitle": 100,
    "team": 100,
    "group": 100,
}
ADDRESS_LIMITS = {"street": 50, "city": 50, "state": 50, "zipcode": 10, "country": 50}
SOCIAL_ID_LIMIT = 100
LANGUAGES = ("en", "it", "th", "ja", "zh-hant", "zh-hans")

PHONE_FIELDS = {
    "Mobile": "mobilePhone",
    "Work": "workPhone",
    "Home": "homePhone",
    "Other": "otherPhone",
}
EMAIL_FIELDS = {"Work": "email", "Personal": "personalEmail", "Other": "otherEmail"}
# The seed's Social Messaging Type values → the contact record's field.
SOCIAL_FIELDS = {
    "Messenger": "facebook",
    "WhatsApp": "whatsApp",
    "WeChat": "weChat",
    "LINE": "line",
    "Twitter": "twitter",
    "LinkedIn": "linkedin",
    "WOZTELL (WhatsApp Cloud)": "whatsApp",
    "WOZTELL (Facebook)": "facebook",
    "WOZTELL (Instagram)": "instagram",
}
_DATE = re.compile(r"^\d{2}/\d{2}/\d{4}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def parse(raw: Any) -> wire.ContactBody:
    """The body as ``wire.ContactBody``, or a 6451000 parameter error saying what is wrong."""
    if not isinstance(raw, dict):
        raise param_error("the body must be a JSON object")
    try:
        body = wire.ContactBody.model_validate(raw)
    except ValidationError as exc:
        raise param_error(first_error(exc)) from None
    _check(body)
    return body


def first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"])
    return f"{where}: {error['msg']}" if where else error["msg"]


def _limit(field: str, value: str | None, limit: int) -> None:
    if value is not None and len(value) > limit:
        raise param_error(f"{field} exceed maximum limit {limit}")


def _check(body: wire.ContactBody) -> None:
    for field, limit in LIMITS.items():
        _limit(field, getattr(body, field), limit)
    if body.addresses is not None:
        for field, limit in ADDRESS_LIMITS.items():
            _limit(f"addresses.{field}", getattr(body.addresses, field), limit)
    for phone in body.phones or []:
        if not is_phone(phone.phone):
            raise param_error(f"invalid phone {phone.phone!r}: use +country code and number")
    for email in body.emails or []:
        if not _EMAIL.match(email.email):
            raise param_error(f"invalid email {email.email!r}")
    if body.language is not None and body.language not in LANGUAGES:
        raise param_error(f"invalid language {body.language!r}: use one of {', '.join(LANGUAGES)}")
    if body.birthDate is not None:
        try:
            if not _DATE.match(body.birthDate):
                raise ValueError
            datetime.strptime(body.birthDate, "%d/%m/%Y")
        except ValueError:
            raise param_error(f"invalid birthDate {body.birthDate!r}: use DD/MM/YYYY") from None
    for kind, value in (body.socialContacts or {}).items():
        if kind not in SOCIAL_FIELDS:
            raise param_error(
                f"invalid social messaging type {kind!r}: use one of {', '.join(SOCIAL_FIELDS)}"
            )
        _limit(f"socialContacts.{kind}", value, SOCIAL_ID_LIMIT)


def changes(body: wire.ContactBody) -> Doc:
    """The record fields the body sets (fields it leaves out are not in the result)."""
    out: dict[str, Any] = {}
    plain = {
        "firstName": "firstName",
        "lastName": "lastName",
        "level": "level",
        "type": "customerType",
        "company": "companyName",
        "jobTitle": "jobTitle",
        "team": "department",
        "group": "group",
        "language": "language",
        "birthDate": "birthday",
    }
    for field, target in plain.items():
        value = getattr(body, field)
        if value is not None:
            out[target] = value
    for phone in body.phones or []:
        out[PHONE_FIELDS[phone.type]] = phone.phone
    for email in body.emails or []:
        out[EMAIL_FIELDS[email.type]] = email.email
    for kind, value in (body.socialContacts or {}).items():
        out[SOCIAL_FIELDS[kind]] = value
    if body.addresses is not None:
        out["addresses"] = body.addresses.model_dump(exclude={"model_config"})
    return out
