"""Field types with the limits and value lists of CINNOX's Zapier actions (the seed's tables).

Every limit is checked before any call, so a zap learns what is wrong from zapflow (at load time
when the value is written in the zap, else when the step renders it) rather than from CINNOX.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

import phonenumbers
from pydantic import AfterValidator, BeforeValidator, Field, StringConstraints

Name = Annotated[str, StringConstraints(strip_whitespace=True, max_length=50)]
"""First name, last name: up to 50 characters."""
Org = Annotated[str, StringConstraints(strip_whitespace=True, max_length=100)]
"""Company, job title, team, group: up to 100 characters."""
Place = Annotated[str, StringConstraints(strip_whitespace=True, max_length=50)]
"""Street, city, state, country: up to 50 characters."""
ZipCode = Annotated[str, StringConstraints(strip_whitespace=True, max_length=10)]
SocialId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


def _loosely(choices: object) -> Callable[[object], object]:
    """Read a dropdown value however it is typed: case, spaces, ``_``, ``-`` and brackets do not
    matter (``mobile``, ``woztell_whatsapp_cloud``); anything else goes on to the Literal, whose
    error lists the seed's values."""
    values = get_args(choices)
    lookup = {re.sub(r"[^a-z0-9]", "", v.lower()): v for v in values}

    def read(value: object) -> object:
        if isinstance(value, str) and value not in values:
            return lookup.get(re.sub(r"[^a-z0-9]", "", value.lower()), value)
        return value

    return read


def _dropdown(choices: Any) -> Any:
    return Annotated[choices, BeforeValidator(_loosely(choices))]


Level = _dropdown(Literal["Primary", "Secondary", "Tertiary"])
ContactType = _dropdown(Literal["Lead", "Prospect", "Customer", "Others"])
PhoneType = _dropdown(Literal["Mobile", "Work", "Home", "Other"])
EmailType = _dropdown(Literal["Work", "Personal", "Other"])
SocialType = _dropdown(
    Literal[
        "Messenger",
        "WhatsApp",
        "WeChat",
        "LINE",
        "Twitter",
        "LinkedIn",
        "WOZTELL (WhatsApp Cloud)",
        "WOZTELL (Facebook)",
        "WOZTELL (Instagram)",
    ]
)
"""The seed's dropdowns, by label or however it is typed (see ``_loosely``)."""


def _key(value: str) -> str:
    return " ".join(value.strip().lower().replace("_", " ").replace("-", " ").split())


# Number types, as users type them: the seed's labels ("Virtual Number"), their keys
# ("virtual_number"), the wire's list names ("access-numbers", "cli", "sms-numbers") and the
# CINNOX Dashboard's words for them. Each maps to the value zapflow sends.
_NUMBER_LIST_TYPES = {
    "access-numbers": ("access numbers", "virtual number", "virtual numbers", "did", "tf"),
    "cli": ("cli", "service number", "service numbers", "caller id", "custom"),
    "sms-numbers": ("sms numbers", "alphanumeric", "sender id", "alphanumeric sender id"),
}
_SMS_NUMBER_TYPES = {
    "Virtual Number": _NUMBER_LIST_TYPES["access-numbers"],
    "Service Number": _NUMBER_LIST_TYPES["cli"] + _NUMBER_LIST_TYPES["sms-numbers"],
}


def _one_of(
    choices: dict[str, tuple[str, ...]], shown: dict[str, str]
) -> Callable[[object], object]:
    lookup = {_key(k): k for k in choices} | {
        a: k for k, aliases in choices.items() for a in aliases
    }

    def read(value: object) -> object:
        if not isinstance(value, str):
            return value
        found = lookup.get(_key(value))
        if found is None:
            allowed = " or ".join(f"{k} ({shown[k]})" for k in choices)
            raise ValueError(f"{value!r} is not a number type; use {allowed}")
        return found

    return read


NumberType = Annotated[
    Literal["access-numbers", "cli", "sms-numbers"],
    BeforeValidator(
        _one_of(
            _NUMBER_LIST_TYPES,
            {
                "access-numbers": "Virtual Number",
                "cli": "Service Number",
                "sms-numbers": "Alphanumeric",
            },
        )
    ),
]
"""Get Number list's type. ``Virtual Number``, ``Service Number``, ``Alphanumeric`` are read too."""
SmsNumberType = Annotated[
    Literal["Virtual Number", "Service Number"],
    BeforeValidator(
        _one_of(
            _SMS_NUMBER_TYPES,
            {
                "Virtual Number": "or virtual_number, access-numbers",
                "Service Number": "or service_number, cli, sms-numbers",
            },
        )
    ),
]
"""Send SMS's type, by the seed's label or its key (``virtual_number``, ``access-numbers`` …)."""
NUMBER_LISTS: dict[str, tuple[str, ...]] = {
    "Virtual Number": ("access-numbers",),
    "Service Number": ("cli", "sms-numbers"),
}
"""Which number lists hold the sender numbers of each SMS number type (the seed's drop-down)."""

LANGUAGES = {
    "en": "English",
    "it": "Italian",
    "th": "Thai",
    "ja": "Japanese",
    "zh-hant": "Traditional Chinese",
    "zh-hans": "Simplified Chinese",
}
# The seed's dropdown spells Traditional Chinese "zh-ant"; the Get Enquiry detail table and
# ISO 639-1 with script subtags say "zh-hant". Accept the seed's spelling, send the right one.
_LANGUAGE_ALIASES = {"zh-ant": "zh-hant"}


def _language(value: object) -> object:
    if not isinstance(value, str):
        return value
    code = value.strip().lower().replace("_", "-")
    code = _LANGUAGE_ALIASES.get(code, code)
    if code not in LANGUAGES:
        allowed = ", ".join(f"{c} ({n})" for c, n in LANGUAGES.items())
        raise ValueError(f"{value!r} is not a language CINNOX offers; use one of: {allowed}")
    return code


Language = Annotated[str, BeforeValidator(_language), Field(description="ISO 639-1 code")]


def _phone(value: str) -> str:
    text = value.strip()
    if not text.startswith("+"):
        raise ValueError(
            f"{value!r} must be in +country code form, e.g. +85291234567 (put + before the "
            "country code)"
        )
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"{value!r} is not a phone number: {exc}") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError(f"{value!r} is not a valid phone number for its country code")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


PhoneNumber = Annotated[
    str,
    AfterValidator(_phone),
    Field(description='"+" country code and number, e.g. +85291234567', examples=["+85291234567"]),
]

_DDMMYYYY = re.compile(r"^\d{2}/\d{2}/\d{4}$")


def _birth_date(value: str) -> str:
    text = value.strip()
    try:
        if not _DDMMYYYY.match(text):
            raise ValueError
        born = datetime.strptime(text, "%d/%m/%Y")
    except ValueError:
        raise ValueError(
            f"{value!r} is not a date in the form dd/mm/yyyy, e.g. 25/11/1990"
        ) from None
    if born > datetime.now():
        raise ValueError(f"{value!r} is in the future")
    return text


BirthDate = Annotated[str, AfterValidator(_birth_date), Field(description="dd/mm/yyyy")]

_SENDER_ID = re.compile(r"^[A-Za-z0-9 ]{1,11}$")


def _sender(value: str) -> str:
    text = value.strip()
    if text.startswith("+"):
        return _phone(text)
    if _SENDER_ID.match(text) and not text.isdigit():
        return text  # an alphanumeric sender id (service number)
    raise ValueError(
        f"{value!r} is neither a +country code number nor an alphanumeric sender id "
        "(1-11 letters, digits, spaces)"
    )


SenderNumber = Annotated[str, AfterValidator(_sender)]
