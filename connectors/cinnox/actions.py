"""The 8 actions of CINNOX's Zapier app, with the seed's fields, value lists and limits.

Input fields are the seed's request keys in snake_case (``Display Case Number`` →
``display_case_number``); outputs use the seed's response keys as they are.
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any, Self, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from connectors._contract import ActionContext
from connectors._errors import AuthError, ConnectorError, PermanentError
from connectors.cinnox import fields, wire
from connectors.cinnox._app import app
from connectors.cinnox.client import CinnoxClient
from connectors.cinnox.sms import is_gsm7, segments


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty or only spaces")
    return value


Text = Annotated[str, StringConstraints(min_length=1), AfterValidator(_not_blank)]


def client(ctx: ActionContext) -> CinnoxClient:
    return CinnoxClient(ctx.connection, connection_name=ctx.connection_name or "")


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


M = TypeVar("M", bound=BaseModel)


def read_reply(model: type[M], reply: Any, what: str) -> M:
    """A reply CINNOX gave (with success code) as ``model``. The models take every spelling and
    type CINNOX is known or likely to send; what still does not fit is named, key by key, in a
    ``PermanentError`` (CINNOX answered; asking again gives the same answer)."""
    try:
        return model.model_validate(reply)
    except ValidationError as exc:
        problems = []
        for error in exc.errors()[:5]:
            key = ".".join(str(p) for p in error["loc"]) or "the reply"
            if error["type"] == "missing":
                problems.append(f"no {key}")
            else:
                problems.append(f"{key}: {error['msg']} (got {_short(error.get('input'))})")
        raise PermanentError(
            f"CINNOX answered {what} (success) with a reply zapflow cannot read: "
            f"{'; '.join(problems)}. The reply's keys were: {_keys(reply)}"
        ) from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _keys(reply: Any) -> str:
    return ", ".join(sorted(map(str, reply))) if isinstance(reply, dict) else type(reply).__name__


_warned: set[tuple[str, str, str]] = set()


def warn_unknown(
    ctx: ActionContext, what: str, values: dict[str, Any], known: dict[str, frozenset[str]]
) -> None:
    """Log (once per process for each field and value) a value outside the seed's list: it is
    passed on as text, and a ``when:`` comparing with the seed's values will not match it."""
    for field, allowed in known.items():
        value = values.get(field)
        if value is None or value in allowed:
            continue
        if (what, field, str(value)) in _warned:
            continue
        _warned.add((what, field, str(value)))
        ctx.logger.warning(
            "CINNOX's %s has %s %r, not one of the documented %s; passed on as text",
            what,
            field,
            value,
            ", ".join(sorted(allowed)),
        )


# --------------------------------------------------------------------------- enquiries


class EnquiryDetailInput(_Input):
    display_case_number: Text = Field(
        description="Display Case Number: the enquiry ID shown in the CINNOX Dashboard"
    )


class EnquiryDetail(wire.EnquiryDetail):
    """The full enquiry object, with the seed's keys."""


@app.action("get_enquiry_detail", title="Get Enquiry detail")
async def get_enquiry_detail(input: EnquiryDetailInput, ctx: ActionContext) -> EnquiryDetail:
    """Allows you to query the enquiry details, by its display case number."""
    reply = await client(ctx).request(
        "GET", wire.ENQUIRY_DETAIL, params={"enquiryID": input.display_case_number}
    )
    reply.pop("code", None)
    detail = read_reply(EnquiryDetail, reply, "Get Enquiry detail")
    warn_unknown(ctx, "enquiry detail", reply, wire.ENQUIRY_DETAIL_KNOWN)
    return detail


# --------------------------------------------------------------------------- contacts


class ContactFields(_Input):
    """The fields of an external contact, as the seed's Create/Update External Contact."""

    first_name: fields.Name | None = Field(None, description="First Name (up to 50 characters)")
    last_name: fields.Name | None = Field(None, description="Last Name (up to 50 characters)")
    level: fields.Level | None = Field(None, description="Level: Primary, Secondary or Tertiary")
    type: fields.ContactType | None = Field(
        None, description="Type: Lead, Prospect, Customer or Others"
    )
    phone_type: fields.PhoneType | None = Field(
        None, description="Phone Type: Mobile, Work, Home or Other (default Mobile)"
    )
    phone_number: fields.PhoneNumber | None = Field(
        None, description='Phone Number, "+" country code and number, e.g. +85291234567'
    )
    email_type: fields.EmailType | None = Field(
        None, description="Email Type: Work, Personal or Other (default Work)"
    )
    email_address: EmailStr | None = Field(None, description="Email Address")
    company: fields.Org | None = Field(None, description="Company (up to 100 characters)")
    job_title: fields.Org | None = Field(None, description="Job Title (up to 100 characters)")
    team: fields.Org | None = Field(None, description="Team (up to 100 characters)")
    group: fields.Org | None = Field(None, description="Group (up to 100 characters)")
    language: fields.Language | None = Field(
        None, description="Language, ISO 639-1: en, it, th, ja, zh-hant or zh-hans"
    )
    birth_date: fields.BirthDate | None = Field(None, description="Birth Date, dd/mm/yyyy")
    zip_code: fields.ZipCode | None = Field(None, description="Zip Code (up to 10 characters)")
    street: fields.Place | None = Field(None, description="Street (up to 50 characters)")
    city: fields.Place | None = Field(None, description="City (up to 50 characters)")
    state: fields.Place | None = Field(None, description="State (up to 50 characters)")
    country: fields.Place | None = Field(None, description="Country (up to 50 characters)")
    social_messaging_type: fields.SocialType | None = Field(
        None,
        description="Social Messaging Type: Messenger, WhatsApp, WeChat, LINE, Twitter, "
        "LinkedIn, WOZTELL (WhatsApp Cloud), WOZTELL (Facebook) or WOZTELL (Instagram)",
    )
    social_messaging_name_id: fields.SocialId | None = Field(
        None,
        description="Social Messaging Name Id: the contact's id or account name there "
        "(up to 100 characters)",
    )

    @model_validator(mode="after")
    def _pairs(self) -> Self:
        pairs = (
            ("phone_type", "phone_number"),
            ("email_type", "email_address"),
            ("social_messaging_type", "social_messaging_name_id"),
        )
        for kind, value in pairs:
            if getattr(self, kind) is not None and getattr(self, value) is None:
                raise ValueError(f"{kind} is set but {value} is missing")
        if self.social_messaging_name_id is not None and self.social_messaging_type is None:
            raise ValueError("social_messaging_name_id needs social_messaging_type")
        return self

    def body(self) -> dict[str, Any]:
        """The CINNOX request body (wire.ContactBody) for the fields that are set."""
        address = {
            "street": self.street,
            "city": self.city,
            "state": self.state,
            "zipcode": self.zip_code,
            "country": self.country,
        }
        body = wire.ContactBody(
            firstName=self.first_name,
            lastName=self.last_name,
            level=self.level,
            type=self.type,
            phones=[{"type": self.phone_type or "Mobile", "phone": self.phone_number}]
            if self.phone_number
            else None,
            emails=[{"type": self.email_type or "Work", "email": self.email_address}]
            if self.email_address
            else None,
            company=self.company,
            jobTitle=self.job_title,
            team=self.team,
            group=self.group,
            language=self.language,
            birthDate=self.birth_date,
            addresses=address if any(v is not None for v in address.values()) else None,
            socialContacts={self.social_messaging_type: self.social_messaging_name_id}
            if self.social_messaging_type and self.social_messaging_name_id
            else None,
        )
        return body.model_dump(exclude_none=True)

    def echoed(self) -> dict[str, Any]:
        """The seed's response keys: the fields as CINNOX stored them."""
        out = self.model_dump(exclude={"external_contact_id"})
        if self.phone_number and not self.phone_type:
            out["phone_type"] = "Mobile"
        if self.email_address and not self.email_type:
            out["email_type"] = "Work"
        return out


class CreateContactInput(ContactFields):
    @model_validator(mode="after")
    def _named(self) -> Self:
        if not (self.first_name or self.last_name):
            raise ValueError("a contact needs a first_name or a last_name")
        return self


class ContactOutput(BaseModel):
    """The seed's response keys of Create/Update External Contact."""

    birth_date: str | None = None
    city: str | None = None
    company: str | None = None
    country: str | None = None
    email_address: str | None = None
    email_type: str | None = None
    first_name: str | None = None
    group: str | None = None
    job_title: str | None = None
    language: str | None = None
    last_name: str | None = None
    level: str | None = None
    phone_number: str | None = None
    phone_type: str | None = None
    social_messaging_name_id: str | None = None
    social_messaging_type: str | None = None
    state: str | None = None
    street: str | None = None
    team: str | None = None
    type: str | None = None
    zip_code: str | None = None


class CreatedContact(ContactOutput):
    id: str = Field(description="The new external contact's id (for Update External Contact)")


@app.action("create_external_contact", title="Create External Contact")
async def create_external_contact(input: CreateContactInput, ctx: ActionContext) -> CreatedContact:
    """Allows you to create an external contact (custom fields are not supported)."""
    reply = await client(ctx).request(
        "POST", wire.CREATE_CONTACT, json=input.body(), idempotency_key=ctx.idempotency_key
    )
    return CreatedContact(id=str(reply["id"]), **input.echoed())


class UpdateContactInput(ContactFields):
    external_contact_id: Text = Field(
        description="External Contact ID: the unique id of the contact to update"
    )

    @model_validator(mode="after")
    def _something(self) -> Self:
        if not self.model_dump(exclude={"external_contact_id"}, exclude_none=True):
            raise ValueError("give at least one field to update")
        return self


class UpdatedContact(ContactOutput):
    contact_id: str = Field(description="id of the updated external contact")


@app.action("update_external_contact", title="Update External Contact")
async def update_external_contact(input: UpdateContactInput, ctx: ActionContext) -> UpdatedContact:
    """Allows you to update the external contact details (custom fields are not supported)."""
    path = wire.UPDATE_CONTACT.format(contact_id=input.external_contact_id)
    reply = await client(ctx).request(
        "PUT", path, json=input.body(), idempotency_key=ctx.idempotency_key
    )
    return UpdatedContact(
        contact_id=str(reply.get("id", input.external_contact_id)), **input.echoed()
    )


class ContactDetailInput(_Input):
    full_name: Text = Field(description="Full Name: First name{SPACE}Last name, exact match only")


class ContactDetail(wire.ContactRecord):
    """The seed's Get External Contact Detail keys; empty when no contact has that name."""

    found: bool = Field(description="Whether a contact with exactly that full name exists")
    matches: int = Field(
        0, description="How many contacts have that full name (the first is shown)"
    )
    id: str | None = Field(None, description="External contact id")  # type: ignore[assignment]
    addresses: wire.Address = Field(default_factory=wire.Address)  # type: ignore[assignment]
    sharedWith: list[str] = Field(default_factory=list)  # type: ignore[assignment]
    slaveContacts: list[str] = Field(  # type: ignore[assignment]
        default_factory=list, alias="slavecontacts", description="Merged contacts' ids"
    )


@app.action("get_external_contact_detail", title="Get External Contact Detail")
async def get_external_contact_detail(
    input: ContactDetailInput, ctx: ActionContext
) -> ContactDetail:
    """Allows you to query the external contact details, by exact full name."""
    reply = await client(ctx).request(
        "GET", wire.CONTACT_LIST, params={"fullName": input.full_name, "offset": 0, "limit": 50}
    )
    found = read_reply(wire.ListReply, reply, "the external contact list").result
    if not found:
        return ContactDetail(found=False)
    record = read_reply(wire.ContactRecord, found[0], "an external contact").model_dump(
        exclude_none=True
    )
    return ContactDetail.model_validate({**record, "found": True, "matches": len(found)})


# --------------------------------------------------------------------------- numbers, SMS, IM


class NumberListInput(_Input):
    number_type: fields.NumberType = Field(
        description="Number Type: access-numbers (Virtual Number), cli (Service Number) or "
        "sms-numbers (Alphanumeric)"
    )


class NumberItem(BaseModel):
    ServiceID: str = Field(description="The service account ID")
    Number: str = Field(description="The number")
    type: str = Field(description="CUSTOM (service number), ALPHANUMERIC, TF (toll-free), DID")
    country: str = Field(description="The country where the number was registered")
    expireDate: str | None = Field(None, description="Number expiry date")


class NumberList(BaseModel):
    numbers: list[NumberItem]
    count: int


@app.action("get_number_list", title="Get Number list")
async def get_number_list(input: NumberListInput, ctx: ActionContext) -> NumberList:
    """Allows you to query the available number list."""
    records = await numbers(ctx, input.number_type, fresh=True)
    items = [
        NumberItem(
            ServiceID=r.serviceID,
            Number=r.number,
            type=r.type,
            country=r.country,
            expireDate=r.expireDate,
        )
        for r in records
    ]
    return NumberList(numbers=items, count=len(items))


NUMBERS_FRESH_FOR = 300.0
"""Seconds a connection's number list is trusted for checking senders (a miss reads it again)."""
_numbers: dict[tuple[str, str, str], tuple[float, list[wire.NumberRecord]]] = {}
_unreadable: dict[tuple[str, str, str], float] = {}


async def numbers(ctx: ActionContext, number_type: str, *, fresh: bool) -> list[wire.NumberRecord]:
    """The account's numbers of one list (``access-numbers``, ``cli``, ``sms-numbers``), all pages,
    kept a few minutes per connection for Send SMS's sender check."""
    conn = ctx.connection
    key = (conn.base_url, conn.app_id, number_type)
    cached = _numbers.get(key)
    if cached and not fresh and time.monotonic() - cached[0] < NUMBERS_FRESH_FOR:
        return cached[1]
    path = wire.NUMBER_LIST.format(number_type=number_type)
    found: list[wire.NumberRecord] = []
    while True:
        reply = await client(ctx).request(
            "GET", path, params={"offset": len(found), "limit": wire.LIST_LIMIT_MAX}
        )
        page = read_reply(wire.ListReply, reply, f"the {number_type} number list").result
        found += [read_reply(wire.NumberRecord, r, f"a {number_type} number") for r in page]
        total = reply.get("total")
        if len(page) < wire.LIST_LIMIT_MAX or (isinstance(total, int) and len(found) >= total):
            break
    for record in found:
        if record.type not in NUMBER_RECORD_TYPES:
            warn_unknown(ctx, "number list", {"type": record.type}, {"type": NUMBER_RECORD_TYPES})
    _numbers[key] = (time.monotonic(), found)
    return found


NUMBER_RECORD_TYPES = frozenset({"CUSTOM", "ALPHANUMERIC", "TF", "DID"})


def _same_number(a: str, b: str) -> bool:
    if a.startswith("+") or b.startswith("+"):
        return re.sub(r"\D", "", a) == re.sub(r"\D", "", b)
    return a.strip().casefold() == b.strip().casefold()


async def _find(ctx: ActionContext, sms_type: str, sender: str, *, fresh: bool) -> Any:
    for number_type in fields.NUMBER_LISTS[sms_type]:
        for record in await numbers(ctx, number_type, fresh=fresh):
            if _same_number(record.number, sender):
                return record
    return None


async def check_sender(ctx: ActionContext, sms_type: str, sender: str) -> str:
    """Refuse, before anything is sent, a Sender Number that is not one of the connection's
    numbers of that type able to send SMS (the seed's drop-down). The list is cached; a number
    not in it reads the list again, so a number added in the Dashboard works at once. If the
    list cannot be read (CINNOX refuses the call), the SMS goes and CINNOX checks the sender.
    Returns the number as the account lists it (``hkcare`` → ``HKCARE``)."""
    conn = ctx.connection
    unreadable = (conn.base_url, conn.app_id, sms_type)
    if time.monotonic() - _unreadable.get(unreadable, -NUMBERS_FRESH_FOR) < NUMBERS_FRESH_FOR:
        return sender  # the list could not be read a moment ago: CINNOX checks the sender
    try:
        record = await _find(ctx, sms_type, sender, fresh=False)
        if record is None:
            record = await _find(ctx, sms_type, sender, fresh=True)
    except AuthError:
        raise
    except ConnectorError as exc:
        # The number-list paths are a guess (wire.NUMBER_LIST): a CINNOX without them, or one
        # failing for now, must not stop SMS. Send, and try the list again in a few minutes.
        _unreadable[unreadable] = time.monotonic()
        ctx.logger.warning(
            "could not read the number list to check the sender (%s); sending, CINNOX checks it",
            exc,
        )
        return sender
    name = ctx.connection_name or ctx.connection.app_id
    if record is None:
        other = "Service Number" if sms_type == "Virtual Number" else "Virtual Number"
        try:
            elsewhere = await _find(ctx, other, sender, fresh=False)
        except PermanentError:
            elsewhere = None
        if elsewhere is not None:
            raise PermanentError(
                f"Sender Number {sender} is a {other} of connection {name!r}, not a {sms_type}: "
                f"set number_type: {other}"
            )
        usable = [r.number for t in fields.NUMBER_LISTS[sms_type] for r in _cached(ctx, t)]
        usable = [n for n in usable if _sends_sms(ctx, sms_type, n)]
        raise PermanentError(
            f"Sender Number {sender} is not a {sms_type} of connection {name!r}; "
            + (
                f"its {sms_type}s that send SMS: {', '.join(usable[:20])}"
                if usable
                else f"it has no {sms_type} that sends SMS"
            )
            + " (Get Number list shows them)"
        )
    if record.supportSMS is False:
        usable = [n for t in fields.NUMBER_LISTS[sms_type] for n in _sms_numbers(ctx, t)]
        raise PermanentError(
            f"Sender Number {sender} of connection {name!r} cannot send SMS (CINNOX lists it "
            f"with supportSMS false); {sms_type}s that do: {', '.join(usable[:20]) or 'none'}"
        )
    return record.number


def _cached(ctx: ActionContext, number_type: str) -> list[wire.NumberRecord]:
    conn = ctx.connection
    return _numbers.get((conn.base_url, conn.app_id, number_type), (0.0, []))[1]


def _sms_numbers(ctx: ActionContext, number_type: str) -> list[str]:
    return [r.number for r in _cached(ctx, number_type) if r.supportSMS is not False]


def _sends_sms(ctx: ActionContext, sms_type: str, number: str) -> bool:
    return any(number in _sms_numbers(ctx, t) for t in fields.NUMBER_LISTS[sms_type])


MAX_PARTS_DEFAULT = 3


class SendSmsInput(_Input):
    number_type: fields.SmsNumberType = Field(
        description="Number Type: Virtual Number or Service Number (also written virtual_number, "
        "service_number, or as the number lists access-numbers, cli, sms-numbers)"
    )
    sender_number: fields.SenderNumber = Field(
        description="Sender Number: one of the account's numbers of that type that sends SMS "
        "(Get Number list); checked before sending"
    )
    recipient_number: fields.PhoneNumber = Field(
        description='Recipient Number: "+" country code and number, e.g. +85291234567'
    )
    text: Text = Field(
        description="Text: the SMS. One SMS holds 160 characters in English (GSM-7), 70 in "
        "Chinese (UCS-2); longer texts are split and CINNOX charges each part"
    )
    max_parts: int = Field(
        MAX_PARTS_DEFAULT,
        ge=1,
        le=255,
        description="zapflow's cost guard: a text that would go out as more SMS parts than this "
        f"is refused before sending (default {MAX_PARTS_DEFAULT})",
    )

    @model_validator(mode="after")
    def _within_parts(self) -> Self:
        cost = segments(self.text)
        if cost.segments <= self.max_parts:
            return self
        unit = "characters" if cost.encoding == "UCS-2" else "GSM-7 characters"
        message = (
            f"text would go out as {cost.segments} SMS parts ({cost.characters} {unit}, "
            f"{cost.encoding}, {cost.per_segment} per part), more than max_parts: "
            f"{self.max_parts} allows; shorten it or raise max_parts (CINNOX charges each part)"
        )
        forcing = [c for c in dict.fromkeys(self.text) if not is_gsm7(c)]
        if cost.encoding == "UCS-2" and len(forcing) <= 5:
            named = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in forcing)
            fits = segments("".join(c for c in self.text if is_gsm7(c)))
            message += (
                f". It is sent as UCS-2 (70 per SMS) only because of {named}: without "
                f"{'it' if len(forcing) == 1 else 'them'} it is GSM-7 and {fits.segments} part(s)"
            )
        # located at `text` (not the whole input), so the error names the field to change
        error = PydanticCustomError("sms_parts", "{message}", {"message": message})
        raise ValidationError.from_exception_data(
            type(self).__name__, [InitErrorDetails(type=error, loc=("text",), input=self.text)]
        )


class SmsSent(BaseModel):
    response_code: str = Field(description="Response Code (0 when CINNOX accepted the SMS)")
    exception: str = Field(
        "",
        description="Exception: CINNOX's message about the SMS, if its reply carries one; empty "
        "when it accepted the SMS without remark (a refused SMS fails the step with its message)",
    )
    status: str = Field(description="Delivery status so far, e.g. Submitted")
    transaction_id: str = Field(description="Matches the SMS delivery receipt's transactionId")
    service_id: str
    encoding: str = Field(description="GSM-7 or UCS-2")
    characters: int = Field(description="Length in that encoding's units")
    segments: int = Field(description="How many SMS CINNOX charges for this text")


@app.action("send_sms", title="Send SMS")
async def send_sms(input: SendSmsInput, ctx: ActionContext) -> SmsSent:
    """Allows you to send an SMS, and reports how many SMS segments it costs. The sender must be
    one of the connection's numbers of the type, and the text at most ``max_parts`` SMS."""
    cost = segments(input.text)
    sender = await check_sender(ctx, input.number_type, input.sender_number)
    body = wire.SendSms(
        numberType=input.number_type,
        senderNumber=sender,
        recipientNumber=input.recipient_number,
        text=input.text,
    )
    reply = await client(ctx).request(
        "POST", wire.SEND_SMS, json=body.model_dump(), idempotency_key=ctx.idempotency_key
    )
    try:
        sent = wire.SendSmsReply.model_validate(reply)
    except ValidationError:
        raise PermanentError(
            f"CINNOX accepted the SMS to {input.recipient_number} (code {reply.get('code')}) but "
            f"its reply has no transactionID (keys: {_keys(reply)}): the SMS has probably been "
            "sent, so check the recipient before replaying this step"
        ) from None
    return SmsSent(
        response_code=str(sent.code),
        exception=sent.exception or "",
        status=sent.status,
        transaction_id=sent.transactionID,
        service_id=sent.serviceID,
        encoding=cost.encoding,
        characters=cost.characters,
        segments=cost.segments,
    )


ImText = Annotated[
    str, StringConstraints(min_length=1, max_length=wire.IM_MAX_CHARS), AfterValidator(_not_blank)
]


class StaffImInput(_Input):
    staff_id: Text = Field(description="Staff Id: the staff member to send the IM to")
    text: ImText = Field(description="Text: the message (up to 5000 characters)")


class StaffImSent(BaseModel):
    staff_id: str
    text: str
    message_id: str | None = Field(None, description="CINNOX's id of the message, if given")


async def _push(ctx: ActionContext, message: wire.MessagePush) -> dict[str, Any]:
    reply = await client(ctx).request(
        "POST",
        wire.MESSAGE_PUSH,
        json=message.model_dump(exclude_none=True),
        idempotency_key=ctx.idempotency_key,
    )
    return wire.MessagePushReply.model_validate(reply).result


@app.action("send_im_to_staff", title="Send Instant Message (IM) to Staff")
async def send_im_to_staff(input: StaffImInput, ctx: ActionContext) -> StaffImSent:
    """Allows you to send an instant message to a staff member."""
    result = await _push(
        ctx,
        wire.MessagePush(receiverEID=input.staff_id, messages=[wire.TextMessage(text=input.text)]),
    )
    return StaffImSent(staff_id=input.staff_id, text=input.text, message_id=_message_id(result))


class RoomImInput(_Input):
    room_id: Text = Field(
        description="Room Id: the chat room id of the Space (copy it from the Space's details)"
    )
    text: ImText = Field(description="Text: the message (up to 5000 characters)")


class RoomImSent(BaseModel):
    room_id: str
    text: str
    message_id: str | None = Field(None, description="CINNOX's id of the message, if given")


@app.action("send_im_to_room", title="Send IM to Room (Group Chat)")
async def send_im_to_room(input: RoomImInput, ctx: ActionContext) -> RoomImSent:
    """Allows you to send an instant message (IM) to a Space (group chat)."""
    result = await _push(
        ctx, wire.MessagePush(roomID=input.room_id, messages=[wire.TextMessage(text=input.text)])
    )
    return RoomImSent(room_id=input.room_id, text=input.text, message_id=_message_id(result))


def _message_id(result: dict[str, Any]) -> str | None:
    value = result.get("messageID") or result.get("messageId")
    return str(value) if value is not None else None


# --------------------------------------------------------------------------- connection check


@app.connection_check
async def check(connection: Any, name: str) -> str:
    """A cheap real call: the first page of the staff list."""
    reply = await CinnoxClient(connection, connection_name=name).request(
        "GET", wire.STAFF_LIST, params={"offset": 0, "limit": 1}
    )
    total = reply.get("total")
    if total is None:
        raise PermanentError("CINNOX answered the staff list without a total")
    return f"CINNOX answered: {total} staff member(s) in the service"
