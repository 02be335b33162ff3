"""CINNOX's Open API on the wire, as far as it is public, and our documented guesses beyond it.

The single description of the wire that both sides use: the client (``client.py``) sends these
requests and reads these replies; the sandbox (``sandbox/``) answers them. Sources:
``shared/cinnox-api.md`` (docs.cinnox.com). Everything marked GUESS is not public; it is kept
here, in one place, so a real CINNOX reply that differs changes one file.

Conventions (public): every path is under ``{Base URL}/v1/api/apps/{App ID}``; requests carry
``Authorization: Bearer <App Token>`` and JSON; replies carry ``code`` (0 or 200 = success) with
the data fields beside it; errors are ``{"code": int, "message": str}`` with HTTP 400.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import IntEnum
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field

API_PREFIX = "/v1/api/apps/{app_id}"
RATE_LIMIT_PER_MINUTE = 500
"""Requests per minute per service account (public)."""
LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX = 50, 500
IM_MAX_MESSAGES, IM_MAX_CHARS = 10, 5000


class Code(IntEnum):
    """CINNOX reply codes."""

    OK = 0
    OK_ALT = 200
    TAG_NOT_FOUND = 3000203
    DESTINATION_NOT_FOUND = 3000205
    METHOD_NOT_FOUND = 6450001
    PARAMETER_ERROR = 6451000
    BAD_RESPONSE_FROM_SERVICE = 6451001
    TOO_MANY_REQUESTS = 6451010
    # GUESS: the code for a token that is unknown, regenerated or whose account was deleted is
    # not public; the sandbox answers HTTP 401 with this code, and the client treats any 401/403
    # as a rejected token.
    UNAUTHORIZED = 6450401


SUCCESS_CODES = frozenset({Code.OK, Code.OK_ALT})
RETRYABLE_CODES = frozenset({Code.BAD_RESPONSE_FROM_SERVICE, Code.TOO_MANY_REQUESTS})


# --------------------------------------------------------------------------- paths

ENQUIRY_DETAIL = "/data/enquiry-detail"  # GET ?enquiryID=<enquiry id or displayCaseNumber> GUESS
CREATE_CONTACT = "/management/create_externalcontact"  # POST ContactBody → {code, id}
UPDATE_CONTACT = "/management/update_externalcontact/{contact_id}"  # PUT ContactBody → {code, id}
CONTACT_LIST = "/contacts/extcontact-list"  # GET ?offset&limit&fullName (GUESS: fullName exact)
STAFF_LIST = "/contacts/staffcontact-list"  # GET ?offset&limit&fullName
MESSAGE_PUSH = "/message-push"  # POST MessagePush → {code: 0, result}
SEND_SMS = "/send_sms"  # GUESS: POST SendSms → {code, serviceID, status, transactionID}
NUMBER_LIST = "/{number_type}"  # GUESS: GET /access-numbers | /cli | /sms-numbers
LABELS = "/labels"  # GET ?offset&limit&id&name
EVENT_SUB = "/{family}-event-sub"  # PATCH EventSubscription → EventSubscriptionReply
# GUESS: reading a subscription. Only the PATCH is public; zapflow also sends GET to the same
# path and reads {code, enabled, url, updatedAt} (a family not subscribed: enabled false, url
# and updatedAt null). The sandbox answers it from its stored subscriptions; if CINNOX does not,
# only `zapflow cinnox subscriptions` is affected (it says the GET was refused).
EVENT_SUB_GET = EVENT_SUB  # GET → {code, enabled, url | null, updatedAt | null}  GUESS

NumberType = Literal["access-numbers", "cli", "sms-numbers"]
EventFamily = Literal[
    "inquiry", "external-contact", "staff-contact", "label", "inquiry-label", "call", "outbound-sms"
]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


# --------------------------------------------------------------------------- envelopes


class ErrorReply(_Wire):
    code: int
    message: str


class IdReply(_Wire):
    code: int = 0
    id: str


class ListReply(_Wire):
    """GUESS: list endpoints answer ``{code, total, result: [...]}`` (``total`` may be absent)."""

    code: int = 0
    total: int | None = None
    result: list[dict[str, Any]]


# --------------------------------------------------------------------------- contacts


class Phone(_Wire):
    type: Literal["Mobile", "Work", "Home", "Other"]
    phone: str = Field(description='"+" country code and number, e.g. "+85291234567"')


class Email(_Wire):
    type: Literal["Work", "Personal", "Other"]
    email: str


class Address(_Wire):
    street: str | None = None
    city: str | None = None
    state: str | None = None
    zipcode: str | None = None
    country: str | None = None


class ContactBody(_Wire):
    """Body of create_externalcontact / update_externalcontact (public field names)."""

    firstName: str | None = None
    lastName: str | None = None
    level: Literal["Primary", "Secondary", "Tertiary"] | None = None
    type: Literal["Lead", "Prospect", "Customer", "Others"] | None = None
    phones: list[Phone] | None = None
    emails: list[Email] | None = None
    company: str | None = None
    jobTitle: str | None = None
    team: str | None = None
    group: str | None = None
    language: str | None = None
    birthDate: str | None = Field(None, description="DD/MM/YYYY")
    addresses: Address | None = None
    socialContacts: dict[str, str] | None = Field(
        None, description="GUESS: {social messaging type: id or name}"
    )


class ContactRecord(_Wire):
    """An external contact as extcontact-list returns it (the seed's Get External Contact Detail
    keys; ``slaveContacts`` on the wire is the seed's ``slavecontacts``)."""

    id: str
    firstName: str | None = None
    lastName: str | None = None
    mobilePhone: str | None = None
    workPhone: str | None = None
    homePhone: str | None = None
    otherPhone: str | None = None
    email: str | None = None
    personalEmail: str | None = None
    otherEmail: str | None = None
    facebook: str | None = None
    whatsApp: str | None = None
    weChat: str | None = None
    line: str | None = None
    twitter: str | None = None
    linkedin: str | None = None
    companyName: str | None = None
    department: str | None = None
    jobTitle: str | None = None
    birthday: str | None = None
    language: str | None = None
    addresses: Address | None = None
    customerType: str | None = None
    group: str | None = None
    level: str | None = None
    ownerID: str | None = None
    ownerName: str | None = None
    ownerDepartment: str | None = None
    sharedWith: list[str] | None = None
    slaveContacts: list[str] | None = None


class StaffRecord(_Wire):
    """GUESS: staffcontact-list items."""

    eid: str
    firstName: str | None = None
    lastName: str | None = None
    email: str | None = None
    department: str | None = None


# --------------------------------------------------------------------------- messaging


class TextMessage(_Wire):
    type: Literal["text"] = "text"
    text: str = Field(max_length=IM_MAX_CHARS)


class MessagePush(_Wire):
    """POST /message-push: to a room (Space) by ``roomID``, or to a staff member by
    ``receiverEID`` (GUESS: IM to staff uses the same endpoint)."""

    roomID: str | None = None
    senderEID: str | None = None
    receiverEID: str | None = None
    messages: list[TextMessage] = Field(min_length=1, max_length=IM_MAX_MESSAGES)


class MessagePushReply(_Wire):
    code: int = 0
    result: dict[str, Any] = Field(default_factory=dict, description="GUESS: {messageID, roomID}")


class SendSms(_Wire):
    """GUESS: body of /send_sms, shaped like the public /send_otp."""

    numberType: Literal["Virtual Number", "Service Number"]
    senderNumber: str
    recipientNumber: str
    text: str


class SendSmsReply(_Wire):
    """GUESS: ``{code, serviceID, status, transactionID}``; the id is also read as
    ``transactionId`` / ``TransactionID`` (the receipt's spelling), the rest may be absent."""

    code: int = 0
    serviceID: str = Field("", validation_alias=AliasChoices("serviceID", "serviceId", "ServiceID"))
    status: str = "Submitted"
    transactionID: str = Field(
        validation_alias=AliasChoices("transactionID", "transactionId", "TransactionID")
    )
    exception: str | None = Field(
        None, validation_alias=AliasChoices("exception", "Exception", "message")
    )


class NumberRecord(_Wire):
    """An item of a number list; fields as the public per-staff caller-id reply."""

    serviceID: str = Field("", validation_alias=AliasChoices("serviceID", "serviceId", "ServiceID"))
    number: str
    type: str = Field(description="CUSTOM, ALPHANUMERIC, TF or DID (others are passed on)")
    country: str = ""
    expireDate: str | None = None
    name: str | None = None
    supportSMS: bool | None = None
    supportCall: bool | None = None


class Label(_Wire):
    id: str
    name: str
    colorName: str | None = None
    createdAt: str | None = None
    updatedAt: str | None = None


# --------------------------------------------------------------------------- events


class EventSubscription(_Wire):
    enabled: bool
    url: str


class EventSubscriptionReply(_Wire):
    code: int = 0
    enabled: bool
    url: str
    updatedAt: str


class Challenge(_Wire):
    """CINNOX's URL verification: POSTed to a subscribed URL; the receiver must answer
    ``{"code": 0, "result": {"challenge": <same value>}}``."""

    challenge: str


def challenge_reply(challenge: str) -> dict[str, Any]:
    return {"code": 0, "result": {"challenge": challenge}}


# The events below are the shapes the sandbox delivers. What zapflow accepts from CINNOX is
# wider: ``reading.py`` reads every spelling a public source or the seed uses, and keeps a
# delivery it cannot read as *unrecognised* instead of refusing it.


class EnquiryEvent(_Wire):
    """Family ``inquiry``. Public keys: status, serviceId, displayCaseNumber, eid, type
    ("inquiry"), channel, channelOri, socialId, date, destination, destinationTypes.
    GUESS: the enquiry id travels as ``inquiryID`` and the enquiry type (Broadcast Chat …) as
    ``inquiryType``, since ``type`` is taken by the event type."""

    type: Literal["inquiry"] = "inquiry"
    status: Literal["Opened", "Handling", "Closed", "Missed"]
    serviceId: str
    inquiryID: str
    displayCaseNumber: str | None = None
    inquiryType: str | None = None
    channel: str | None = None
    channelOri: str | None = None
    socialId: str | None = None
    eid: str | None = None
    date: str | None = None
    destination: str | None = None
    destinationTypes: str | None = None


class ContactEventMessage(_Wire):
    type: Literal["contact"] = "contact"
    status: Literal["create", "edit", "merge", "transfer", "delete"]
    serviceId: str
    fullName: str | None = None
    id: str
    fromOwnerID: str | None = None
    toOwnerID: str | None = None


class ContactEvent(_Wire):
    """Family ``external-contact``: the contact event nested in ``message`` (public)."""

    type: Literal["message"] = "message"
    message: ContactEventMessage


class SmsReceiptEvent(_Wire):
    """Family ``outbound-sms``: a delivery receipt (TDR), capitalised keys (public)."""

    Type: Literal["tdr"] = "tdr"
    AppID: str
    ServiceID: str
    TransactionID: str
    RecipientNumber: str | None = None
    RecipientCountry: str | None = None
    ResponseCode: str | None = None
    Status: Literal["Submitted", "Delivered", "Undelivered", "Rejected"]
    Exception: str | None = None


class LabelEvent(_Wire):
    """Family ``label``. GUESS: not public; shaped as the seed's trigger keys."""

    type: Literal["label"] = "label"
    status: Literal["create", "update", "deleted"]
    id: str | None = None
    name: str | None = None
    colorCode: str | None = None


# --------------------------------------------------------------------------- enquiries


def _millis(value: Any) -> Any:
    """A time as epoch milliseconds: from ms or s (a number or digits in text) or ISO 8601 text;
    anything else is kept as it came (text), not refused."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            value = float(text)
        except ValueError:
            try:
                when = datetime.fromisoformat(text.replace("Z", "+00:00"))
            except ValueError:
                return value
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return int(when.timestamp() * 1000)
    if isinstance(value, int | float):
        number = int(value)
        return number * 1000 if 0 < abs(number) < 100_000_000_000 else number  # seconds → ms
    return value


def _whole(value: Any) -> Any:
    """A count (e.g. a duration in ms) sent as a number or as digits in text; else as it came."""
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Millis = Annotated[int | str | None, BeforeValidator(_millis)]
"""A time on the wire: epoch ms, or the text CINNOX sent when it is not a time."""
WholeMs = Annotated[int | str | None, BeforeValidator(_whole)]
"""A duration in ms: a number, or the text CINNOX sent when it is not one."""

ENQUIRY_DETAIL_KNOWN: dict[str, frozenset[str]] = {
    "initChannel": frozenset({"CALL", "IM"}),
    "omniType": frozenset(
        {"CINNOX", "FACEBOOK", "LINE", "WECHAT", "WHATSAPP", "THIRDPARTY", "CHATBOT", "EMAIL"}
    ),
    "language": frozenset({"en", "it", "ja", "th", "zh-hans", "zh-hant"}),
    "closedByType": frozenset({"staff", "visitor", "system"}),
    "destinationType": frozenset({"PHONE", "STAFF", "TRUNK"}),
    "handledType": frozenset({"STAFF", "Phone", "TRUNK"}),
    "inquiryType": frozenset({"Broadcast", "Direct"}),
}
"""The seed's value lists of Get Enquiry detail. A reply may carry others (``WOZTELL``, ``PSTN``,
``zh-HK`` …): they are passed on as text and the step logs a warning naming them."""


class LocationDetail(_Wire):
    regionCode: str | None = Field(None, description="Country code, ISO 3166-1 alpha-2")
    subdivision: str | None = Field(None, description="Country subdivision code")
    city: str | None = None
    province: str | None = None


class ChannelDetail(_Wire):
    type: str | None = Field(None, description="Channel sub-type, e.g. Tag or Staff in Directory")
    id: str | None = Field(None, description="Channel ID")
    maaiiDisplayName: str | None = Field(None, description="Channel's displayed name")


class EnquiryDetail(_Wire):
    """GET /data/enquiry-detail: the seed's "Get Enquiry detail" response keys, beside ``code``.

    Read tolerantly: a value outside the seed's lists (``ENQUIRY_DETAIL_KNOWN``) is kept as
    text, and the action warns; a time may come as epoch milliseconds (the GUESS), seconds, a
    number in text or an ISO 8601 date, and is read as epoch milliseconds."""

    id_: str | None = Field(None, alias="_id", description="DB record ID in CINNOX")
    uniqueKey: str | None = Field(None, description="Internal use")
    createdAT: Millis = Field(None, description="Enquiry creation time (epoch ms)")
    svcID: str | None = Field(None, description="Service account ID")
    inquiry: str | None = Field(None, description="Enquiry ID")
    tag: str | None = Field(None, description="Tag ID")
    visitor: str | None = Field(None, description="Visitor ID")
    roomID: str | None = Field(None, description="Enquiry room ID")
    initChannel: str | None = Field(None, description="Channel type: CALL or IM")
    omniType: str | None = Field(
        None,
        description="Omni-channel type: CINNOX, FACEBOOK, LINE, WECHAT, WHATSAPP, THIRDPARTY, "
        "CHATBOT or EMAIL",
    )
    ip: str | None = Field(None, description="Visitor's IP address")
    language: str | None = Field(
        None, description="Language supported by the staff: en, it, ja, th, zh-hans or zh-hant"
    )
    location: str | None = Field(None, description="Visitor's location")
    locationDetail: LocationDetail | None = None
    platform: str | None = Field(None, description="Platform the visitor used, e.g. ios")
    status: str | None = Field(None, description="Enquiry status")
    closedByType: str | None = Field(None, description="staff, visitor or system")
    displayCaseNumber: str | None = Field(None, description="Enquiry ID shown in the Dashboard")
    channel: str | None = Field(
        None,
        description="Directory, Web Link, Campaign, Virtual Number, Email, Messager, WhatsApp, "
        "WeChat, LINE, Third Party Channel or WOZTELL",
    )
    destinationID: str | None = None
    destinationName: str | None = None
    destinationType: str | None = Field(None, description="PHONE, STAFF or TRUNK")
    destinationEndPoint: str | None = None
    handledType: str | None = Field(None, description="STAFF, Phone or TRUNK")
    handledTarget: str | None = Field(None, description="Staff eid or phone number of the handler")
    handledPartyName: str | None = Field(None, description="Staff who handled the enquiry")
    huntedStaffTargetHistory: list[str] | None = Field(
        None, description="Staff who picked up this enquiry"
    )
    channelDetail: ChannelDetail | None = None
    inquiryType: str | None = Field(None, description="Broadcast or Direct")
    updatedAt: Millis = None
    closedAt: Millis = None
    inquiryGroup: dict[str, Any] | None = None
    transferredParty: dict[str, Any] | None = None
    pickedUpAt: Millis = None
    missedAt: Millis = None
    reopenedAt: Millis = None
    handledPartyDepartment: str | None = None
    visitorName: str | None = Field(None, description="Visitor's full name")
    closeDuration: WholeMs = Field(None, description="Enquiry duration (ms)")
    historyJoined: list[str] | None = Field(None, description="Staff who joined the enquiry")
    attachment: bool | str | None = None
    staffFirstName: str | None = None
    staffLastName: str | None = None
    visitorFirstName: str | None = None
    visitorLastName: str | None = None
    inquiryDeepLink: str | None = Field(None, description="Link to the enquiry in the Dashboard")
    cid: str | None = Field(None, description="Internal use")
