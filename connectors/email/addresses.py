"""Email addresses as zap authors write them: ``chan@example.com``,
``Chan Tai Man <chan@example.com>``, a list of those, or several in one text split by commas."""

from __future__ import annotations

from email.headerregistry import Address
from email.utils import getaddresses
from typing import Annotated

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator


def mailbox(name: str, addr: str) -> Address:
    """One checked address (its domain normalised), or ValueError saying what is wrong."""
    try:
        checked = validate_email(addr, check_deliverability=False)
    except EmailNotValidError as exc:
        shown = addr or name or "(empty)"
        raise ValueError(f"{shown!r} is not an email address: {exc}") from None
    return Address(display_name=name, addr_spec=checked.normalized)


def mailboxes(value: str | list[str]) -> list[Address]:
    """Every address in ``value``; ValueError names the first one that is not valid."""
    items = [value] if isinstance(value, str) else value
    found: list[Address] = []
    for item in items:
        if "\r" in item or "\n" in item:
            raise ValueError(f"{item!r}: an address may not contain line breaks")
        pairs = getaddresses([item])
        if not any(addr for _, addr in pairs) and item.strip():
            raise ValueError(f"{item!r} is not an email address")
        found += [mailbox(name, addr) for name, addr in pairs if name or addr]
    return found


def _as_text(value: str | list[str]) -> list[str]:
    return [str(address) for address in mailboxes(value)]


def _one(value: str) -> str:
    found = mailboxes(value)
    if len(found) != 1:
        raise ValueError(f"give one address, got {len(found)}")
    return str(found[0])


def _optional_one(value: str) -> str:
    return _one(value) if value.strip() else ""


Addresses = Annotated[str | list[str], AfterValidator(_as_text)]
"""One address, a list, or several split by commas; validated into a list of addresses."""
OneAddress = Annotated[str, AfterValidator(_one)]
OptionalAddress = Annotated[str, AfterValidator(_optional_one)]


def addr_spec(text: str) -> str:
    """The bare ``user@domain`` of an address validated above."""
    return mailboxes(text)[0].addr_spec
