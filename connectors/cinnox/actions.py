"""The 8 actions of CINNOX's Zapier app, with the seed's fields, value lists and limits.

Input fields are the seed's request keys in snake_case (``Display Case Number`` →
``display_case_number``); outputs use the seed's response keys as they are.
"""

from __future__ import annotations

from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    model_validator,
)

from connectors._contract import ActionContext
from connectors.cinnox import fields, wire
from connectors.cinnox._app import app
from connectors.cinnox.client import CinnoxClient
from connectors.cinnox.sms import segments
from flows.errors import PermanentError


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty or only spaces")
    return value


Text = Annotated[str, StringConstraints(min_length=1), AfterValidator(_not_blank)]


def client(ctx: ActionContext) -> CinnoxClient:
    return CinnoxClient(ctx.connection, connection_name=ctx.connection_name or "")


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
    return EnquiryDetail.model_validate(reply)


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
    found = wire.ListReply.model_validate(reply).result
    if not found:
        return ContactDetail(found=False)
    record = wire.ContactRecord.model_validate(found[0]).model_dump(exclude_none=True)
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
    path = wire.NUMBER_LIST.format(number_type=input.number_type)
    reply = await client(ctx).request("GET", path, params={"offset": 0, "limit": 500})
    records = [
        wire.NumberRecord.model_validate(r) for r in wire.ListReply.model_validate(reply).result
    ]
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


class SendSmsInput(_Input):
    number_type: fields.SmsNumberType = Field(
        description="Number Type: Virtual Number or Service Number"
    )
    sender_number: fields.SenderNumber = Field(
        description="Sender Number: one of the account's numbers of that type (Get Number list)"
    )
    recipient_number: fields.PhoneNumber = Field(
        description='Recipient Number: "+" country code and number, e.g. +85291234567'
    )
    text: Text = Field(
        description="Text: the SMS. One SMS holds 160 characters in English (GSM-7), 70 in "
        "Chinese (UCS-2); longer texts are split and CINNOX charges each part"
    )


class SmsSent(BaseModel):
    response_code: str = Field(description="Response Code (0 when CINNOX accepted the SMS)")
    exception: str | None = Field(None, description="Exception: the error message, if any")
    status: str = Field(description="Delivery status so far, e.g. Submitted")
    transaction_id: str = Field(description="Matches the SMS delivery receipt's transactionId")
    service_id: str
    encoding: str = Field(description="GSM-7 or UCS-2")
    characters: int = Field(description="Length in that encoding's units")
    segments: int = Field(description="How many SMS CINNOX charges for this text")


@app.action("send_sms", title="Send SMS")
async def send_sms(input: SendSmsInput, ctx: ActionContext) -> SmsSent:
    """Allows you to send an SMS, and reports how many SMS segments it costs."""
    cost = segments(input.text)
    body = wire.SendSms(
        numberType=input.number_type,
        senderNumber=input.sender_number,
        recipientNumber=input.recipient_number,
        text=input.text,
    )
    reply = await client(ctx).request(
        "POST", wire.SEND_SMS, json=body.model_dump(), idempotency_key=ctx.idempotency_key
    )
    sent = wire.SendSmsReply.model_validate(reply)
    return SmsSent(
        response_code=str(sent.code),
        exception=None,
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
