"""The 8 CINNOX actions over real HTTP against the sandbox, called the way the engine calls them:
what a user relies on when a step succeeds, the seed's limits refused before any call, and each
kind of failure turned into the error class that tells the engine what to do next."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from pydantic import BaseModel, SecretStr, ValidationError

from connectors import ActionContext, registry
from connectors._clients import ClientPool
from connectors._errors import (
    AuthError,
    ConnectorError,
    PermanentError,
    RetryableError,
    StepInputError,
)
from connectors._rates import Rate
from connectors.cinnox import actions as cinnox_actions
from connectors.cinnox import client as cinnox_client
from connectors.cinnox.client import CinnoxClient, close_all
from connectors.cinnox.connection import CinnoxConnection
from connectors.cinnox.sandbox import demo
from flows.errors import ZapValidationError
from flows.loader import load_zap_text
from flows.model import ActionStep, TriggerSpec, Zap
from flows.plan import StepPlan, plan_of
from flows.runtime import run_step

if TYPE_CHECKING:
    from cinnox_sandbox_fixtures import Sandbox

pytest_plugins = ["cinnox_sandbox_fixtures"]  # cinnox_sandbox, cinnox_sandbox_factory …

PETER = "64f0c2a7b1d3e5f7a9c0b101"
TOMMY = "60d5ec49f1a2c3b4d5e6f705"
CARE_ROOM = "6601b7e2a9c84d3f5e0d1a01"
HOTLINE = "+85235009000"
CUSTOMER = "+85291234567"


@pytest.fixture(scope="module", autouse=True)
async def _close_pooled_clients() -> Any:
    yield
    await close_all()


def connection(sandbox: Sandbox, token: str | None = None) -> CinnoxConnection:
    return CinnoxConnection(
        app_id=sandbox.app_id, app_token=token or sandbox.token, base_url=sandbox.base_url
    )


def context(conn: CinnoxConnection, name: str = "main") -> ActionContext:
    """A step's context; a new event id each time, so each call has its own idempotency key."""
    return ActionContext(
        zap_id="z",
        step_id="s",
        run_id="r",
        event_id=uuid.uuid4().hex,
        connection=conn,
        connection_name=name,
    )


async def call(
    name: str, data: dict[str, Any], conn: CinnoxConnection, ctx: ActionContext | None = None
) -> Any:
    """Run ``cinnox.<name>`` as the engine does: validate the input, then run the action."""
    action = registry.action(f"cinnox.{name}")
    out = await action.run(action.input_model.model_validate(data), ctx or context(conn))
    assert isinstance(out, action.output_model)
    return out


def dumped(out: BaseModel) -> dict[str, Any]:
    """The step output as the engine stores it."""
    return out.model_dump(mode="json", by_alias=True)


# --------------------------------------------------------------------------- enquiries


SEED_ENQUIRY_KEYS = set(
    [
        "_id",
        "uniqueKey",
        "createdAT",
        "svcID",
        "inquiry",
        "tag",
        "visitor",
        "roomID",
        "initChannel",
        "omniType",
        "ip",
        "language",
        "location",
        "locationDetail",
        "platform",
        "status",
        "closedByType",
        "displayCaseNumber",
        "channel",
        "destinationID",
        "destinationName",
        "destinationType",
        "destinationEndPoint",
        "handledType",
        "handledTarget",
        "handledPartyName",
        "huntedStaffTargetHistory",
        "channelDetail",
        "inquiryType",
        "updatedAt",
        "closedAt",
        "inquiryGroup",
        "transferredParty",
        "pickedUpAt",
        "missedAt",
        "reopenedAt",
        "handledPartyDepartment",
        "visitorName",
        "closeDuration",
        "historyJoined",
        "attachment",
        "staffFirstName",
        "staffLastName",
        "visitorFirstName",
        "visitorLastName",
        "inquiryDeepLink",
        "cid",
    ]
)
"""The response keys of the seed's Get Enquiry detail."""


async def test_get_enquiry_detail_by_display_case_number(cinnox_sandbox: Sandbox) -> None:
    out = dumped(
        await call(
            "get_enquiry_detail", {"display_case_number": "C100208"}, connection(cinnox_sandbox)
        )
    )
    [record] = cinnox_sandbox.control.data("enquiries", id="66b2d4f6a8c0e1f3a5b7c908")
    assert out["_id"] == record["_id"] and out["_id"]
    assert (out["displayCaseNumber"], out["status"], out["channel"]) == (
        "C100208",
        "Missed",
        "Virtual Number",
    )
    assert out["inquiry"] == "66b2d4f6a8c0e1f3a5b7c908"
    assert out["visitorName"] == "Gary Kwok" and out["missedAt"] == record["missedAt"]
    assert out["inquiryDeepLink"].startswith("http") and out["inquiry"] in out["inquiryDeepLink"]
    assert "code" not in out
    assert set(out) >= SEED_ENQUIRY_KEYS


@pytest.mark.parametrize("case", [f"C1002{n:02d}" for n in range(1, 11)])
async def test_every_demo_enquiry_fits_the_output_model(cinnox_sandbox: Sandbox, case: str) -> None:
    """All statuses and channels (incl. a call forwarded to a phone) read without surprises."""
    out = await call(
        "get_enquiry_detail", {"display_case_number": case}, connection(cinnox_sandbox)
    )
    assert out.displayCaseNumber == case and out.id_ and out.visitorName


async def test_emitted_enquiry_then_its_detail(cinnox_sandbox: Sandbox) -> None:
    event = cinnox_sandbox.control.emit("missed_enquiry", {"channel": "WhatsApp"})["event"]
    out = await call(
        "get_enquiry_detail",
        {"display_case_number": event["displayCaseNumber"]},
        connection(cinnox_sandbox),
    )
    assert (out.inquiry, out.status, out.channel) == (event["inquiryID"], "Missed", "WhatsApp")


async def test_enquiry_detail_with_values_beyond_the_seeds_lists_is_read_and_warned(
    cinnox_sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    """CINNOX answered: the step must not fail because a value is newer than the seed."""
    changes = {
        "omniType": "WOZTELL",
        "handledType": "PSTN",
        "destinationType": "PHONE_NUMBER",
        "language": "zh-HK",
        "createdAT": "2024-05-01T10:00:00Z",
        "missedAt": "1714557600",
        "closeDuration": "5000",
    }
    cinnox_sandbox.control.add_fault("/data/enquiry-detail", changes=changes)
    caplog.set_level("WARNING", logger="zapflow.action")
    out = await call(
        "get_enquiry_detail", {"display_case_number": "C100208"}, connection(cinnox_sandbox)
    )
    assert (out.omniType, out.handledType, out.language) == ("WOZTELL", "PSTN", "zh-HK")
    assert out.createdAT == 1714557600000 and out.missedAt == 1714557600000
    assert out.closeDuration == 5000
    for field, value in [("omniType", "WOZTELL"), ("handledType", "PSTN"), ("language", "zh-HK")]:
        assert f"has {field} {value!r}, not one of the documented" in caplog.text
    assert "'PHONE_NUMBER'" in caplog.text and "passed on as text" in caplog.text


async def test_an_enquiry_detail_reply_zapflow_cannot_read_names_the_key(
    cinnox_sandbox: Sandbox,
) -> None:
    cinnox_sandbox.control.add_fault(
        "/data/enquiry-detail", changes={"locationDetail": "Hong Kong", "historyJoined": 7}
    )
    with pytest.raises(PermanentError) as info:
        await call(
            "get_enquiry_detail", {"display_case_number": "C100208"}, connection(cinnox_sandbox)
        )
    message = str(info.value)
    assert (
        "CINNOX answered Get Enquiry detail (success) with a reply zapflow cannot read" in message
    )
    assert "locationDetail:" in message and "'Hong Kong'" in message
    assert "historyJoined:" in message and "displayCaseNumber" in message  # the reply's keys


async def test_a_number_of_an_undocumented_type_is_listed(
    cinnox_sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    voip = {"serviceId": "svc", "number": "+85258001234", "type": "VOIP", "supportSMS": True}
    cinnox_sandbox.control.add_fault("/access-numbers", changes={"result": [voip], "total": None})
    out = await call(
        "get_number_list", {"number_type": "Virtual Number"}, connection(cinnox_sandbox)
    )
    assert [(n.Number, n.type, n.ServiceID) for n in out.numbers] == [
        ("+85258001234", "VOIP", "svc")
    ]
    assert "has type 'VOIP'" in caplog.text


async def test_unknown_enquiry_is_a_permanent_error(cinnox_sandbox: Sandbox) -> None:
    with pytest.raises(PermanentError, match=r"\(6451000\): invalid enquiryID") as info:
        await call(
            "get_enquiry_detail", {"display_case_number": "C999999"}, connection(cinnox_sandbox)
        )
    assert not isinstance(info.value, AuthError)


# --------------------------------------------------------------------------- contacts

NEW_CONTACT = {
    "first_name": "Siu Ming",
    "last_name": "Wong",
    "level": "Primary",
    "type": "Customer",
    "phone_number": "+852 9123 4568",  # spaces are fine: sent as E.164
    "email_address": "siuming@example.com",
    "company": "Wong's Noodles",
    "job_title": "Owner",
    "team": "Kitchen",
    "group": "Key accounts",
    "language": "zh-ant",  # the seed's spelling of zh-hant
    "birth_date": "01/10/1990",
    "zip_code": "000000",
    "street": "1 Temple Street",
    "city": "Yau Ma Tei",
    "state": "Kowloon",
    "country": "Hong Kong",
    "social_messaging_type": "WhatsApp",
    "social_messaging_name_id": "+85291234568",
}


async def test_create_contact_then_find_it_by_exact_full_name(cinnox_sandbox: Sandbox) -> None:
    conn = connection(cinnox_sandbox)
    ctx = context(conn)
    created = await call("create_external_contact", NEW_CONTACT, conn, ctx)
    assert created.id
    out = dumped(created)
    assert (out["language"], out["phone_number"]) == ("zh-hant", "+85291234568")
    assert (out["phone_type"], out["email_type"]) == ("Mobile", "Work")  # the seed's defaults
    assert out["first_name"] == "Siu Ming" and out["zip_code"] == "000000"

    [received] = cinnox_sandbox.control.sent("contacts")
    assert received["result"] == {"id": created.id, "action": "create", "fullName": "Siu Ming Wong"}
    assert received["idempotencyKey"] == ctx.idempotency_key
    body = received["request"]
    assert body["language"] == "zh-hant" and body["birthDate"] == "01/10/1990"
    assert body["phones"] == [{"type": "Mobile", "phone": "+85291234568"}]
    assert body["emails"] == [{"type": "Work", "email": "siuming@example.com"}]
    assert body["socialContacts"] == {"WhatsApp": "+85291234568"}

    found = await call("get_external_contact_detail", {"full_name": "Siu Ming Wong"}, conn)
    assert (found.found, found.matches, found.id) == (True, 1, created.id)
    assert (found.firstName, found.lastName, found.mobilePhone) == (
        "Siu Ming",
        "Wong",
        "+85291234568",
    )
    assert (found.email, found.companyName, found.jobTitle, found.department) == (
        "siuming@example.com",
        "Wong's Noodles",
        "Owner",
        "Kitchen",
    )
    assert (found.customerType, found.level, found.group) == ("Customer", "Primary", "Key accounts")
    assert (found.birthday, found.language, found.whatsApp) == (
        "01/10/1990",
        "zh-hant",
        "+85291234568",
    )
    assert found.addresses.model_dump() == {
        "street": "1 Temple Street",
        "city": "Yau Ma Tei",
        "state": "Kowloon",
        "zipcode": "000000",
        "country": "Hong Kong",
    }
    assert found.ownerID and found.ownerName

    partial = await call("get_external_contact_detail", {"full_name": "Siu Ming"}, conn)
    assert (partial.found, partial.matches, partial.id) == (False, 0, None)


async def test_contact_detail_of_a_demo_contact(cinnox_sandbox: Sandbox) -> None:
    out = dumped(
        await call(
            "get_external_contact_detail", {"full_name": "Peter Chan"}, connection(cinnox_sandbox)
        )
    )
    assert (out["found"], out["id"], out["mobilePhone"]) == (True, PETER, CUSTOMER)
    assert (out["ownerName"], out["companyName"]) == ("Candy Chow", "Harbour Logistics Ltd")
    assert out["addresses"]["street"] == "18 Harbour Road"
    assert out["slavecontacts"] == [] and "slaveContacts" not in out  # the seed's key


async def test_contact_detail_of_an_unknown_name(cinnox_sandbox: Sandbox) -> None:
    out = await call(
        "get_external_contact_detail", {"full_name": "Nobody Here"}, connection(cinnox_sandbox)
    )
    assert (out.found, out.matches, out.id, out.firstName) == (False, 0, None, None)


async def test_contact_detail_counts_namesakes(cinnox_sandbox: Sandbox) -> None:
    conn = connection(cinnox_sandbox)
    first = await call("create_external_contact", {"first_name": "Ka", "last_name": "Ho"}, conn)
    await call("create_external_contact", {"first_name": "Ka", "last_name": "Ho"}, conn)
    out = await call("get_external_contact_detail", {"full_name": "Ka Ho"}, conn)
    assert (out.found, out.matches, out.id) == (True, 2, first.id)


async def test_update_contact_changes_only_what_is_given(cinnox_sandbox: Sandbox) -> None:
    conn = connection(cinnox_sandbox)
    change = {
        "external_contact_id": PETER,
        "job_title": "COO",
        "phone_type": "Work",
        "phone_number": "+85228001234",
        "city": "Central",
        "language": "zh-hans",
    }
    out = await call("update_external_contact", change, conn)
    assert (out.contact_id, out.job_title, out.phone_type, out.city) == (
        PETER,
        "COO",
        "Work",
        "Central",
    )
    [received] = cinnox_sandbox.control.sent("contacts")
    assert received["result"]["action"] == "update" and received["result"]["id"] == PETER
    assert set(received["request"]) == {"jobTitle", "phones", "addresses", "language"}

    peter = await call("get_external_contact_detail", {"full_name": "Peter Chan"}, conn)
    assert (peter.jobTitle, peter.workPhone, peter.language) == ("COO", "+85228001234", "zh-hans")
    assert peter.mobilePhone == CUSTOMER  # untouched fields stay
    assert (peter.addresses.city, peter.addresses.street) == ("Central", "18 Harbour Road")
    assert peter.companyName == "Harbour Logistics Ltd"


async def test_update_an_unknown_contact_is_a_permanent_error(cinnox_sandbox: Sandbox) -> None:
    change = {"external_contact_id": "000000000000000000000000", "job_title": "x"}
    with pytest.raises(PermanentError, match="invalid contactID"):
        await call("update_external_contact", change, connection(cinnox_sandbox))
    assert cinnox_sandbox.control.sent("contacts") == []


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("number_type", "types"),
    [("access-numbers", {"DID", "TF"}), ("cli", {"CUSTOM"}), ("sms-numbers", {"ALPHANUMERIC"})],
)
async def test_number_list_by_type(
    cinnox_sandbox: Sandbox, number_type: str, types: set[str]
) -> None:
    out = await call("get_number_list", {"number_type": number_type}, connection(cinnox_sandbox))
    expected = {n["number"]: n for n in demo.NUMBERS if n["type"] in types}
    assert out.count == len(out.numbers) == len(expected) > 0
    assert {n.Number for n in out.numbers} == set(expected)
    for item in out.numbers:
        number = expected[item.Number]
        assert (item.type, item.country, item.expireDate) == (
            number["type"],
            number["country"],
            number["expireDate"],
        )
        assert item.ServiceID == "hkcc-demo.sandbox"
    assert set(dumped(out)["numbers"][0]) == {
        "ServiceID",
        "Number",
        "type",
        "country",
        "expireDate",
    }


# --------------------------------------------------------------------------- SMS


async def test_send_sms_from_a_virtual_number(cinnox_sandbox: Sandbox) -> None:
    conn = connection(cinnox_sandbox)
    ctx = context(conn)
    data = {
        "number_type": "Virtual Number",
        "sender_number": HOTLINE,
        "recipient_number": "+852 9123 4567",
        "text": "Your order is ready",
    }
    out = await call("send_sms", data, conn, ctx)
    assert (out.response_code, out.status, out.exception) == ("0", "Submitted", "")
    assert out.service_id == "hkcc-demo.sandbox"
    [sent] = cinnox_sandbox.control.sent("sms")
    assert sent["request"] == {
        "numberType": "Virtual Number",
        "senderNumber": HOTLINE,
        "recipientNumber": CUSTOMER,
        "text": "Your order is ready",
    }
    assert sent["result"]["transactionID"] == out.transaction_id
    assert sent["idempotencyKey"] == ctx.idempotency_key


async def test_send_sms_from_a_sender_id(cinnox_sandbox: Sandbox) -> None:
    data = {
        "number_type": "Service Number",
        "sender_number": "HKCARE",
        "recipient_number": "+6591234567",
        "text": "Appointment tomorrow 10:00",
    }
    out = await call("send_sms", data, connection(cinnox_sandbox))
    [sent] = cinnox_sandbox.control.sent("sms")
    assert (sent["request"]["senderNumber"], sent["request"]["recipientNumber"]) == (
        "HKCARE",
        "+6591234567",
    )
    assert sent["result"]["transactionID"] == out.transaction_id
    assert sent["result"]["recipientCountry"] == "SG"


@pytest.mark.parametrize(
    ("text", "encoding", "characters", "segments"),
    [
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("你" * 70, "UCS-2", 70, 1),
        ("你" * 71, "UCS-2", 71, 2),
    ],
    ids=["gsm7-160", "gsm7-161", "chinese-70", "chinese-71"],
)
async def test_send_sms_reports_segments(
    cinnox_sandbox: Sandbox, text: str, encoding: str, characters: int, segments: int
) -> None:
    data = {
        "number_type": "Virtual Number",
        "sender_number": HOTLINE,
        "recipient_number": CUSTOMER,
        "text": text,
    }
    out = await call("send_sms", data, connection(cinnox_sandbox))
    assert (out.encoding, out.characters, out.segments) == (encoding, characters, segments)
    [sent] = cinnox_sandbox.control.sent("sms")
    assert sent["request"]["text"] == text  # the text arrives whole, CINNOX splits it
    assert (sent["result"]["encoding"], sent["result"]["segments"]) == (encoding, segments)


async def test_send_sms_reports_submitted_not_the_receipt(cinnox_sandbox: Sandbox) -> None:
    """The action says CINNOX accepted the SMS; whether it arrived comes later, as the
    delivery receipt trigger."""
    data = {
        "number_type": "Virtual Number",
        "sender_number": HOTLINE,
        "recipient_number": demo.UNDELIVERED_NUMBER,
        "text": "Your parcel is at the door",
    }
    out = await call("send_sms", data, connection(cinnox_sandbox))
    assert out.status == "Submitted"
    deadline = time.monotonic() + 5
    while cinnox_sandbox.control.sent("sms")[0]["result"]["status"] == "Submitted":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    [sent] = cinnox_sandbox.control.sent("sms")
    assert (sent["result"]["status"], sent["result"]["transactionID"]) == (
        "Undelivered",
        out.transaction_id,
    )


# --------------------------------------------------------------------------- IM


async def test_send_im_to_staff(cinnox_sandbox: Sandbox) -> None:
    conn = connection(cinnox_sandbox)
    ctx = context(conn)
    out = await call("send_im_to_staff", {"staff_id": TOMMY, "text": "Call Ivan back"}, conn, ctx)
    assert (out.staff_id, out.text) == (TOMMY, "Call Ivan back")
    [sent] = cinnox_sandbox.control.sent("im")
    assert sent["result"]["to"] == "Tommy Siu" and sent["result"]["messageID"] == out.message_id
    assert sent["request"] == {
        "receiverEID": TOMMY,
        "messages": [{"type": "text", "text": "Call Ivan back"}],
    }
    assert sent["idempotencyKey"] == ctx.idempotency_key


async def test_send_im_to_room(cinnox_sandbox: Sandbox) -> None:
    text = "New VIP enquiry C100208 — please call back"
    out = await call(
        "send_im_to_room", {"room_id": CARE_ROOM, "text": text}, connection(cinnox_sandbox)
    )
    assert (out.room_id, out.text) == (CARE_ROOM, text)
    [sent] = cinnox_sandbox.control.sent("im")
    assert sent["result"]["to"] == "Customer Care HK"
    assert (sent["result"]["roomID"], sent["result"]["messageID"]) == (CARE_ROOM, out.message_id)
    assert sent["request"] == {"roomID": CARE_ROOM, "messages": [{"type": "text", "text": text}]}


async def test_an_im_of_5000_characters_is_sent(cinnox_sandbox: Sandbox) -> None:
    conn = connection(cinnox_sandbox)
    await call("send_im_to_room", {"room_id": CARE_ROOM, "text": "x" * 5000}, conn)
    await call("send_im_to_staff", {"staff_id": TOMMY, "text": "界" * 5000}, conn)
    texts = [s["request"]["messages"][0]["text"] for s in cinnox_sandbox.control.sent("im")]
    assert texts == ["界" * 5000, "x" * 5000]


# --------------------------------------------------------------------------- limits, refused
# before any call

TRIPWIRE = 99


@contextmanager
def nothing_reaches(sandbox: Sandbox) -> Iterator[None]:
    """Fail if any API request reaches the sandbox in the block: a fault on every path counts
    each request (and would refuse it), and nothing may be recorded as received."""
    before = sandbox.control.sent()
    sandbox.control.add_fault("*", code=6451000, message="tripwire", times=TRIPWIRE)
    try:
        yield
        assert [f["times"] for f in sandbox.control.faults()] == [TRIPWIRE]
        assert sandbox.control.sent() == before
    finally:
        sandbox.control.clear_faults()


async def refused(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, name: str, data: dict[str, Any]
) -> list[dict[str, Any]]:
    """Check that ``cinnox.<name>`` refuses ``data`` before any call, both when the input is
    validated alone and when the engine runs it as a step on a real connection; returns the
    pydantic errors."""
    action = registry.action(f"cinnox.{name}")
    # A real connection: were the input let through, the step would call the sandbox (and trip
    # the wire); test_a_step_on_an_environment_connection_reaches_the_sandbox shows it would.
    conn_name = env_connection(sandbox, monkeypatch)
    with nothing_reaches(sandbox):
        with pytest.raises(ValidationError) as info:
            action.input_model.model_validate(data)
        with pytest.raises(StepInputError, match=f"input for cinnox.{name} is not valid"):
            await run_step(*step_of(name, data, conn_name))
    return info.value.errors(include_url=False)


def env_connection(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> str:
    """A connection to the sandbox in ZAPFLOW_CINNOX_<NAME>_* variables, as in CI; a new name
    each time (resolved connections are cached by name)."""
    name = f"env-{uuid.uuid4().hex[:8]}"
    prefix = f"ZAPFLOW_CINNOX_{name.upper().replace('-', '_')}_"
    monkeypatch.setenv(prefix + "APP_ID", sandbox.app_id)
    monkeypatch.setenv(prefix + "APP_TOKEN", sandbox.token)
    monkeypatch.setenv(prefix + "BASE_URL", sandbox.base_url)
    return name


def step_of(
    name: str, data: dict[str, Any], connection: str | None = None
) -> tuple[StepPlan, dict[str, Any], ActionContext]:
    """A step of action ``cinnox.<name>`` on ``connection``, compiled as a zap's would be."""
    step = ActionStep(id="act", action=f"cinnox.{name}", input=data, connection=connection)
    zap = Zap(zap="z", trigger=TriggerSpec(app="builtin", event="catch_hook"), steps=[step])
    base = ActionContext(zap_id="z", step_id="act", run_id="r", event_id="e")
    return plan_of(zap).steps["act"], {}, base


async def test_a_step_on_an_environment_connection_reaches_the_sandbox(
    cinnox_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn_name = env_connection(cinnox_sandbox, monkeypatch)
    step, _, base = step_of(
        "send_im_to_staff", {"staff_id": TOMMY, "text": "{{ trigger.text }}"}, conn_name
    )
    rendered, output = await run_step(step, {"trigger": {"text": "Case C100208 was missed"}}, base)
    assert rendered == {"staff_id": TOMMY, "text": "Case C100208 was missed"}
    [sent] = cinnox_sandbox.control.sent("im")
    assert output["message_id"] == sent["result"]["messageID"]
    assert sent["idempotencyKey"] == "e:z:act"


def where(errors: list[dict[str, Any]]) -> set[str]:
    return {".".join(map(str, e["loc"])) for e in errors}


async def test_a_bad_value_rendered_from_the_trigger_is_refused_before_any_call(
    cinnox_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A value the zap file cannot check (a template) is checked once rendered, at run time."""
    conn_name = env_connection(cinnox_sandbox, monkeypatch)
    step, _, base = step_of(
        "send_sms", {**SMS, "recipient_number": "{{ trigger.phone }}"}, conn_name
    )
    refusal = pytest.raises(StepInputError, match="recipient_number: Value error, '91234567'")
    with nothing_reaches(cinnox_sandbox), refusal:
        await run_step(step, {"trigger": {"phone": "91234567"}}, base)


CONTACT_REFUSALS: list[tuple[dict[str, Any], str, str]] = [
    ({"first_name": "x" * 51}, "first_name", "at most 50 characters"),
    ({"last_name": "x" * 51}, "last_name", "at most 50 characters"),
    ({"company": "x" * 101}, "company", "at most 100 characters"),
    ({"job_title": "x" * 101}, "job_title", "at most 100 characters"),
    ({"team": "x" * 101}, "team", "at most 100 characters"),
    ({"group": "x" * 101}, "group", "at most 100 characters"),
    ({"zip_code": "12345678901"}, "zip_code", "at most 10 characters"),
    ({"street": "x" * 51}, "street", "at most 50 characters"),
    ({"city": "x" * 51}, "city", "at most 50 characters"),
    ({"state": "x" * 51}, "state", "at most 50 characters"),
    ({"country": "x" * 51}, "country", "at most 50 characters"),
    (
        {"social_messaging_type": "LINE", "social_messaging_name_id": "x" * 101},
        "social_messaging_name_id",
        "at most 100 characters",
    ),
    ({"phone_number": "85291234567"}, "phone_number", "put + before the country code"),
    ({"phone_number": "91234567"}, "phone_number", "+country code form"),
    ({"phone_number": "+85291112222"}, "phone_number", "not a valid phone number"),
    ({"phone_number": "+852 call me"}, "phone_number", "phone number"),
    ({"birth_date": "1990-10-01"}, "birth_date", "dd/mm/yyyy"),
    ({"birth_date": "31/02/1990"}, "birth_date", "dd/mm/yyyy"),
    ({"birth_date": "1/10/1990"}, "birth_date", "dd/mm/yyyy"),
    ({"birth_date": "10/25/1990"}, "birth_date", "dd/mm/yyyy"),
    ({"level": "Gold"}, "level", "'Primary', 'Secondary' or 'Tertiary'"),
    ({"type": "Partner"}, "type", "'Lead', 'Prospect', 'Customer' or 'Others'"),
    ({"phone_type": "Fax", "phone_number": CUSTOMER}, "phone_type", "'Mobile'"),
    ({"email_type": "Mobile", "email_address": "a@b.example"}, "email_type", "'Personal'"),
    ({"email_address": "not-an-email"}, "email_address", "email"),
    (
        {"social_messaging_type": "MySpace", "social_messaging_name_id": "tom"},
        "social_messaging_type",
        "'WOZTELL (Instagram)'",
    ),
    ({"language": "fr"}, "language", "not a language CINNOX offers"),
    ({"language": "Traditional Chinese"}, "language", "zh-hant (Traditional Chinese)"),
    ({"language": "zh-tw"}, "language", "not a language CINNOX offers"),
]


@pytest.mark.parametrize(("change", "field", "message"), CONTACT_REFUSALS)
@pytest.mark.parametrize("action", ["create_external_contact", "update_external_contact"])
async def test_contact_limits_are_refused_before_any_call(
    cinnox_sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
    action: str,
    change: dict[str, Any],
    field: str,
    message: str,
) -> None:
    base = {"first_name": "Valid"} if action == "create_external_contact" else {}
    if action == "update_external_contact":
        base["external_contact_id"] = PETER
    errors = await refused(cinnox_sandbox, monkeypatch, action, {**base, **change})
    assert where(errors) == {field}
    assert message in errors[0]["msg"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"last_name": "Wong", "phone_type": "Work"}, "phone_type is set but phone_number"),
        ({"last_name": "Wong", "email_type": "Work"}, "email_type is set but email_address"),
        ({"last_name": "Wong", "social_messaging_name_id": "x"}, "needs social_messaging_type"),
        ({"company": "Nobody Ltd"}, "needs a first_name or a last_name"),
        ({"first_name": "Valid", "nickname": "V"}, "Extra inputs are not permitted"),
    ],
)
async def test_incomplete_contacts_are_refused_before_any_call(
    cinnox_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, data: dict[str, Any], message: str
) -> None:
    errors = await refused(cinnox_sandbox, monkeypatch, "create_external_contact", data)
    assert message in " ".join(e["msg"] for e in errors)


async def test_an_update_needs_something_to_change(
    cinnox_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    errors = await refused(
        cinnox_sandbox, monkeypatch, "update_external_contact", {"external_contact_id": PETER}
    )
    assert "at least one field" in errors[0]["msg"]


SMS = {
    "number_type": "Virtual Number",
    "sender_number": HOTLINE,
    "recipient_number": CUSTOMER,
    "text": "hi",
}


@pytest.mark.parametrize(
    ("name", "data", "field", "message"),
    [
        ("get_number_list", {"number_type": "phone"}, "number_type", "cli (Service Number)"),
        ("get_number_list", {"number_type": "sms"}, "number_type", "sms-numbers (Alphanumeric)"),
        (
            "send_sms",
            {**SMS, "number_type": "Mobile Number"},
            "number_type",
            "use Virtual Number (or virtual_number, access-numbers) or Service Number",
        ),
        ("send_sms", {**SMS, "number_type": "WhatsApp"}, "number_type", "or service_number, cli"),
        ("send_sms", {**SMS, "recipient_number": "91234567"}, "recipient_number", "+country code"),
        ("send_sms", {**SMS, "recipient_number": "+85291112222"}, "recipient_number", "valid"),
        ("send_sms", {**SMS, "sender_number": "HK CARE LTD!"}, "sender_number", "alphanumeric"),
        ("send_sms", {**SMS, "sender_number": "35009000"}, "sender_number", "+country code"),
        ("send_sms", {**SMS, "text": ""}, "text", "at least 1 character"),
        ("send_im_to_staff", {"staff_id": TOMMY, "text": "x" * 5001}, "text", "at most 5000"),
        ("send_im_to_staff", {"staff_id": TOMMY, "text": ""}, "text", "at least 1 character"),
        ("send_im_to_staff", {"staff_id": "", "text": "hi"}, "staff_id", "at least 1 character"),
        ("send_im_to_room", {"room_id": CARE_ROOM, "text": "x" * 5001}, "text", "at most 5000"),
        ("send_im_to_room", {"room_id": CARE_ROOM, "text": ""}, "text", "at least 1 character"),
        ("send_im_to_room", {"room_id": "", "text": "hi"}, "room_id", "at least 1 character"),
        ("send_im_to_room", {"text": "hi"}, "room_id", "Field required"),
        ("get_enquiry_detail", {"display_case_number": ""}, "display_case_number", "at least 1"),
        ("get_external_contact_detail", {"full_name": ""}, "full_name", "at least 1 character"),
    ],
)
async def test_other_limits_are_refused_before_any_call(
    cinnox_sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    data: dict[str, Any],
    field: str,
    message: str,
) -> None:
    errors = await refused(cinnox_sandbox, monkeypatch, name, data)
    assert where(errors) == {field}
    assert message in errors[0]["msg"]


async def test_values_at_the_limits_are_accepted_by_zapflow_and_cinnox(
    cinnox_sandbox: Sandbox,
) -> None:
    """The limits are not off by one on either side: exactly 50 / 100 / 10 characters pass the
    input model and the sandbox (which checks like CINNOX)."""
    conn = connection(cinnox_sandbox)
    at_limit = {
        "first_name": "F" * 50,
        "last_name": "L" * 50,
        "company": "c" * 100,
        "job_title": "j" * 100,
        "team": "t" * 100,
        "group": "g" * 100,
        "zip_code": "z" * 10,
        "street": "s" * 50,
        "city": "c" * 50,
        "state": "s" * 50,
        "country": "c" * 50,
        "social_messaging_type": "LINE",
        "social_messaging_name_id": "i" * 100,
        "birth_date": "29/02/2000",
    }
    created = await call("create_external_contact", at_limit, conn)
    found = await call("get_external_contact_detail", {"full_name": f"{'F' * 50} {'L' * 50}"}, conn)
    assert (found.id, found.line, found.birthday) == (created.id, "i" * 100, "29/02/2000")
    assert found.addresses.zipcode == "z" * 10


@pytest.mark.parametrize("spelling", ["zh-ant", "zh-hant", "ZH-HANT", "zh_hant"])
async def test_traditional_chinese_spellings_are_sent_as_zh_hant(
    cinnox_sandbox: Sandbox, spelling: str
) -> None:
    out = await call(
        "update_external_contact",
        {"external_contact_id": PETER, "language": spelling},
        connection(cinnox_sandbox),
    )
    assert out.language == "zh-hant"
    [received] = cinnox_sandbox.control.sent("contacts")
    assert received["request"] == {"language": "zh-hant"}


@pytest.mark.parametrize("code", ["en", "it", "th", "ja", "zh-hant", "zh-hans"])
def test_the_six_languages_are_accepted(code: str) -> None:
    action = registry.action("cinnox.create_external_contact")
    assert action.input_model.model_validate({"first_name": "A", "language": code}).language == code


# --------------------------------------------------------------------------- in a zap file


def zap_with(action: str, input_yaml: str) -> str:
    return (
        "zap: cinnox-limits\n"
        "trigger:\n"
        "  app: cinnox\n"
        "  event: missed_enquiry\n"
        "  connection: main\n"
        "steps:\n"
        "  - id: act\n"
        f"    action: cinnox.{action}\n"
        "    input:\n" + "".join(f"      {line}\n" for line in input_yaml.splitlines())
    )


@pytest.mark.parametrize(
    ("action", "input_yaml", "line", "path", "message"),
    [
        (
            "create_external_contact",
            "first_name: Siu Ming\nlevel: Gold\n",
            11,
            "steps[0].input.level",
            "'Primary', 'Secondary' or 'Tertiary'",
        ),
        (
            "create_external_contact",
            "first_name: Siu Ming\nlanguage: fr\n",
            11,
            "steps[0].input.language",
            "not a language CINNOX offers",
        ),
        (
            "send_sms",
            "number_type: Virtual Number\nsender_number: '+85235009000'\n"
            "recipient_number: '91234567'\ntext: 'Order {{ trigger.displayCaseNumber }}'\n",
            12,
            "steps[0].input.recipient_number",
            "+country code form",
        ),
        (
            "send_im_to_room",
            f"room_id: {CARE_ROOM}\ntext: {'x' * 5001}\n",
            11,
            "steps[0].input.text",
            "at most 5000 characters",
        ),
    ],
    ids=["level", "language", "recipient", "im-text"],
)
def test_a_bad_literal_in_a_zap_file_fails_at_load_time(
    action: str, input_yaml: str, line: int, path: str, message: str
) -> None:
    with pytest.raises(ZapValidationError) as info:
        load_zap_text(zap_with(action, input_yaml), "z.yaml")
    [problem] = info.value.problems
    assert (problem.file, problem.line, problem.path) == ("z.yaml", line, path)
    assert message in problem.message
    assert str(problem).startswith(f"z.yaml:{line}:")


def test_a_zap_file_with_good_literals_and_templates_loads() -> None:
    text = zap_with(
        "create_external_contact",
        "first_name: '{{ trigger.displayCaseNumber }}'\nlevel: Primary\nlanguage: zh-ant\n"
        "phone_number: '+85291234567'\nbirth_date: 25/11/1990\n",
    )
    zap = load_zap_text(text, "z.yaml")
    assert zap.trigger.connection == "main"


def test_a_cinnox_step_needs_a_connection() -> None:
    text = zap_with("get_number_list", "number_type: cli\n").replace(
        "  event: missed_enquiry\n  connection: main\n", "  event: missed_enquiry\n"
    )
    with pytest.raises(ZapValidationError, match="needs a connection"):
        load_zap_text(text, "z.yaml")


# --------------------------------------------------------------------------- errors


async def test_bad_response_from_service_is_retryable(cinnox_sandbox: Sandbox) -> None:
    conn = connection(cinnox_sandbox)
    cinnox_sandbox.control.add_fault("/send_sms", code=6451001)
    with pytest.raises(RetryableError, match="bad response from service") as info:
        await call("send_sms", SMS, conn)
    assert not isinstance(info.value, PermanentError)
    assert cinnox_sandbox.control.sent("sms") == []
    await call("send_sms", SMS, conn)  # the retry goes through
    assert len(cinnox_sandbox.control.sent("sms")) == 1


async def test_http_503_is_retryable(cinnox_sandbox: Sandbox) -> None:
    cinnox_sandbox.control.add_fault("/contacts/*", status=503)
    with pytest.raises(RetryableError, match="could not serve GET /contacts/extcontact-list"):
        await call(
            "get_external_contact_detail", {"full_name": "Peter Chan"}, connection(cinnox_sandbox)
        )


async def test_http_503_without_a_cinnox_body_is_retryable(
    cinnox_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy's 503 page (not CINNOX's JSON) is as transient as CINNOX's own 503."""

    def proxy(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, text="<html>Service Unavailable</html>")

    conn = connection(cinnox_sandbox)
    stub = httpx.AsyncClient(transport=httpx.MockTransport(proxy))
    monkeypatch.setattr(CinnoxClient, "_http", lambda self: stub)
    with pytest.raises(RetryableError, match="HTTP 503"):
        await call("get_number_list", {"number_type": "cli"}, conn)
    await stub.aclose()


async def test_a_reply_later_than_the_timeout_is_retryable(
    cinnox_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cinnox_client, "TIMEOUT", httpx.Timeout(0.3))
    pooled = ClientPool()
    monkeypatch.setattr(cinnox_client, "_clients", pooled)  # new clients, with the short timeout
    cinnox_sandbox.control.add_fault("/cli", delay=2.0)
    started = time.monotonic()
    try:
        with pytest.raises(RetryableError, match=r"did not answer GET /cli in time"):
            await call("get_number_list", {"number_type": "cli"}, connection(cinnox_sandbox))
        assert time.monotonic() - started < 1.5
    finally:
        await pooled.close_all()


async def test_unreachable_cinnox_is_retryable() -> None:
    from connectors._loopback import bind

    sock = bind()
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    conn = CinnoxConnection(app_id="a", app_token="t" * 40, base_url=f"http://127.0.0.1:{port}")
    with pytest.raises(RetryableError, match="could not reach CINNOX for GET /cli: ConnectError"):
        await call("get_number_list", {"number_type": "cli"}, conn)


@pytest.mark.parametrize(
    ("sender", "number_type", "message"),
    [
        (
            "+85235009001",
            "Virtual Number",
            "Sender Number +85235009001 is not a Virtual Number of connection 'main'; its Virtual "
            "Numbers that send SMS: +85235009000, +6562238888",
        ),
        (
            "+85239001234",
            "Virtual Number",
            "Sender Number +85239001234 of connection 'main' cannot send SMS",
        ),
        (
            "HKCARE",
            "Virtual Number",
            "HKCARE is a Service Number of connection 'main', not a Virtual Number: set "
            "number_type: Service Number",
        ),
        (HOTLINE, "Service Number", "is a Virtual Number of connection 'main', not a Service"),
    ],
)
async def test_a_sender_that_is_not_the_accounts_is_refused_before_sending(
    cinnox_sandbox: Sandbox, sender: str, number_type: str, message: str
) -> None:
    data = {**SMS, "sender_number": sender, "number_type": number_type}
    with pytest.raises(PermanentError) as info:
        await call("send_sms", data, connection(cinnox_sandbox))
    assert message in str(info.value)
    assert not isinstance(info.value, AuthError | RetryableError)
    assert cinnox_sandbox.control.sent("sms") == []


@pytest.mark.parametrize(
    ("number_type", "sender"),
    [
        ("virtual_number", HOTLINE),
        ("access-numbers", HOTLINE),
        ("Service Number", "+85236200000"),
        ("service_number", "hkcare"),
        ("sms-numbers", "HKCARE"),
        ("cli", "+852 3620 0000"),
    ],
)
async def test_number_types_are_read_by_label_key_or_list_name(
    cinnox_sandbox: Sandbox, number_type: str, sender: str
) -> None:
    out = await call(
        "send_sms",
        {**SMS, "number_type": number_type, "sender_number": sender},
        connection(cinnox_sandbox),
    )
    assert out.status == "Submitted"
    [sent] = cinnox_sandbox.control.sent("sms")
    assert sent["request"]["numberType"] in ("Virtual Number", "Service Number")
    assert sent["request"]["numberType"] == (
        "Virtual Number"
        if "virtual" in number_type or "access" in number_type
        else "Service Number"
    )


async def test_a_number_added_in_the_dashboard_is_usable_at_once(
    cinnox_sandbox: Sandbox,
) -> None:
    conn = connection(cinnox_sandbox)
    # the list as cached before the hotline was added: the miss reads it again
    cinnox_actions._numbers[(conn.base_url, conn.app_id, "access-numbers")] = (time.monotonic(), [])
    out = await call("send_sms", SMS, conn)
    assert out.status == "Submitted"
    assert cinnox_sandbox.control.sent("sms")[0]["request"]["senderNumber"] == HOTLINE


async def test_when_the_number_list_cannot_be_read_cinnox_checks_the_sender(
    cinnox_sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    cinnox_sandbox.control.add_fault("/access-numbers", code=6451000, message="not for this app")
    cinnox_actions._numbers.clear()
    cinnox_actions._unreadable.clear()
    data = {**SMS, "sender_number": "+85235009001"}
    with pytest.raises(PermanentError) as info:
        await call("send_sms", data, connection(cinnox_sandbox))
    assert "CINNOX refused POST /send_sms (6451000): Invalid senderNumber" in str(info.value)
    assert "could not read the number list to check the sender" in caplog.text
    cinnox_actions._unreadable.clear()


async def test_a_number_list_path_cinnox_lacks_does_not_stop_sms(
    cinnox_sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    """The number-list paths are a guess: a 404 page must not make every SMS fail or retry."""
    cinnox_sandbox.control.add_fault("/access-numbers", status=404, times=5)
    cinnox_actions._numbers.clear()
    cinnox_actions._unreadable.clear()
    conn = connection(cinnox_sandbox)
    try:
        for n in range(3):
            out = await call("send_sms", {**SMS, "text": f"hello {n}"}, conn)
            assert out.status == "Submitted"
        assert caplog.text.count("could not read the number list") == 1  # tried once, not per SMS
        assert [f["times"] for f in cinnox_sandbox.control.faults()] == [4]
    finally:
        cinnox_actions._unreadable.clear()


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("send_im_to_room", {"room_id": "6601b7e2a9c84d3f5e0d1aff", "text": "hi"}),
        ("send_im_to_staff", {"staff_id": "60d5ec49f1a2c3b4d5e6f7ff", "text": "hi"}),
    ],
)
async def test_an_unknown_destination_is_a_permanent_error(
    cinnox_sandbox: Sandbox, name: str, data: dict[str, Any]
) -> None:
    with pytest.raises(PermanentError, match=r"\(3000205\): destination not found") as info:
        await call(name, data, connection(cinnox_sandbox))
    assert not isinstance(info.value, AuthError)
    assert cinnox_sandbox.control.sent("im") == []


async def test_a_parameter_error_fault_is_permanent(cinnox_sandbox: Sandbox) -> None:
    cinnox_sandbox.control.add_fault("/send_sms", code=6451000, message="text contains a URL")
    with pytest.raises(PermanentError, match=r"\(6451000\): text contains a URL"):
        await call("send_sms", SMS, connection(cinnox_sandbox))


async def test_the_sms_reply_exception_is_passed_on(cinnox_sandbox: Sandbox) -> None:
    cinnox_sandbox.control.add_fault("/send_sms", changes={"exception": "queued: carrier busy"})
    out = await call("send_sms", SMS, connection(cinnox_sandbox))
    assert (out.exception, out.status) == ("queued: carrier busy", "Submitted")


async def test_an_sms_reply_without_transaction_id_fails_and_says_it_was_probably_sent(
    cinnox_sandbox: Sandbox,
) -> None:
    cinnox_sandbox.control.add_fault("/send_sms", changes={"transactionID": None})
    with pytest.raises(PermanentError) as info:
        await call("send_sms", SMS, connection(cinnox_sandbox))
    assert "has no transactionID" in str(info.value)
    assert "probably been sent" in str(info.value)
    assert len(cinnox_sandbox.control.sent("sms")) == 1


async def test_an_sms_reply_with_the_receipts_spelling_is_read(cinnox_sandbox: Sandbox) -> None:
    cinnox_sandbox.control.add_fault(
        "/send_sms", changes={"transactionID": None, "TransactionID": "t-1", "serviceID": None}
    )
    out = await call("send_sms", SMS, connection(cinnox_sandbox))
    assert (out.transaction_id, out.service_id) == ("t-1", "")


@pytest.mark.parametrize(
    ("text", "max_parts", "expected"),
    [
        (
            "Your parcel is on its way. " * 8,
            1,
            "text would go out as 2 SMS parts (216 GSM-7 characters, GSM-7, 153 per part), more "
            "than max_parts: 1 allows",
        ),
        ("您好" * 40, 1, "2 SMS parts (80 characters, UCS-2, 67 per part)"),
        ("x" * 160 * 3 + "y", 3, "4 SMS parts"),  # the default guard
        (
            "Your order’s ready: come by the shop before 6pm, quoting your order number. " * 2,
            1,
            "It is sent as UCS-2 (70 per SMS) only because of '’' (U+2019): without it it is "
            "GSM-7 and 1 part(s)",
        ),
    ],
)
async def test_a_text_over_max_parts_is_refused_before_sending(
    cinnox_sandbox: Sandbox,
    monkeypatch: pytest.MonkeyPatch,
    text: str,
    max_parts: int,
    expected: str,
) -> None:
    data = {**SMS, "text": text}
    if max_parts != 3:
        data["max_parts"] = max_parts
    errors = await refused(cinnox_sandbox, monkeypatch, "send_sms", data)
    assert where(errors) == {"text"}
    assert expected in errors[0]["msg"]
    assert "shorten it or raise max_parts" in errors[0]["msg"]


async def test_a_long_text_goes_when_max_parts_allows_it(cinnox_sandbox: Sandbox) -> None:
    out = await call(
        "send_sms", {**SMS, "text": "您好" * 40, "max_parts": 2}, connection(cinnox_sandbox)
    )
    assert (out.segments, out.encoding) == (2, "UCS-2")
    assert "max_parts" not in cinnox_sandbox.control.sent("sms")[0]["request"]


async def test_a_regenerated_token_is_an_auth_error_that_says_how_to_fix_it(
    cinnox_sandbox: Sandbox,
) -> None:
    old = connection(cinnox_sandbox)
    await call("get_number_list", {"number_type": "cli"}, old)  # works, and is now pooled
    fresh = cinnox_sandbox.control.regenerate_token(cinnox_sandbox.app_id)["appToken"]
    with pytest.raises(AuthError) as info:
        await call("send_sms", SMS, old, context(old, name="hk-office"))
    message = str(info.value)
    assert "`zapflow connections rekey cinnox hk-office`" in message
    assert "regenerated" in message and cinnox_sandbox.app_id in message
    assert cinnox_sandbox.token not in message and cinnox_sandbox.token not in repr(info.value)
    assert cinnox_sandbox.control.sent("sms") == []
    out = await call("send_sms", SMS, connection(cinnox_sandbox, token=fresh))
    assert out.status == "Submitted"


async def test_a_rejected_token_of_an_environment_connection_says_which_variable_to_set(
    cinnox_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZAPFLOW_CINNOX_HK_OFFICE_APP_ID", cinnox_sandbox.app_id)
    wrong = connection(cinnox_sandbox, token="not-the-token")
    with pytest.raises(AuthError) as info:
        await call("get_number_list", {"number_type": "cli"}, wrong, context(wrong, "hk-office"))
    message = str(info.value)
    assert "set ZAPFLOW_CINNOX_HK_OFFICE_APP_TOKEN to the new App Token" in message
    assert "rekey" not in message and "not-the-token" not in message


@pytest.mark.parametrize(
    "base_url", ["examplebaseURL.com", "https//examplebaseURL.com", "ftp://x.example", "https://"]
)
def test_a_base_url_that_cannot_be_called_is_refused_when_the_connection_is_made(
    base_url: str,
) -> None:
    with pytest.raises(ValidationError) as info:
        CinnoxConnection(app_id="a", app_token="t", base_url=base_url)
    message = str(info.value)
    assert "base_url" in message and "is not an http(s) URL" in message
    assert "e.g. https://examplebaseURL.com" in message


async def test_a_stored_base_url_without_scheme_fails_at_once_not_after_retries() -> None:
    # stored before zapflow checked Base URLs: the step must fail for good, with the fix
    old = CinnoxConnection.model_construct(
        app_id="a", app_token=SecretStr("t"), base_url="examplebaseURL.com"
    )
    with pytest.raises(PermanentError) as info:
        await call("get_number_list", {"number_type": "cli"}, old, context(old, "hk-office"))
    assert not isinstance(info.value, RetryableError)
    assert "Base URL of connection 'hk-office' cannot be called" in str(info.value)
    assert "`zapflow connect cinnox hk-office --replace`" in str(info.value)


async def test_server_rate_limit_is_retryable_with_retry_after(cinnox_sandbox_factory: Any) -> None:
    with cinnox_sandbox_factory(rate_limit=2) as (base_url, control):
        account = control.accounts()[0]
        conn = CinnoxConnection(
            app_id=account["appId"], app_token=account["appToken"], base_url=base_url
        )
        for _ in range(2):
            await call("get_number_list", {"number_type": "cli"}, conn)
        with pytest.raises(RetryableError, match=r"too many requests \(GET /cli\)") as info:
            await call("get_number_list", {"number_type": "cli"}, conn)
        assert info.value.retry_after is not None and 1 <= info.value.retry_after <= 60
        await close_all()


async def test_client_rate_limiter_waits_instead_of_failing(
    cinnox_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = connection(cinnox_sandbox)
    await call("get_number_list", {"number_type": "access-numbers"}, conn)  # senders now known
    conn = conn.model_copy(update={"rate_limit": Rate(3, 0.5)})
    started = time.monotonic()
    outs = []
    for n in range(4):
        data = {**SMS, "text": f"message {n}"}
        outs.append(await call("send_sms", data, conn))
        if n == 2:
            assert time.monotonic() - started < 0.5  # the first three do not wait
    # the 4th could not start before 0.5 s after the 1st: it waited, then went through
    assert time.monotonic() - started >= 0.45
    sent = cinnox_sandbox.control.sent("sms")
    assert [s["request"]["text"] for s in sent] == [f"message {n}" for n in (3, 2, 1, 0)]
    assert {o.transaction_id for o in outs} == {s["result"]["transactionID"] for s in sent}


def test_rate_limiter_works_in_a_second_event_loop(
    cinnox_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client pools its HTTP clients per event loop because one process may run zaps in
    several loops; the rate limiter, shared by App ID, must then work in each loop too."""
    conn = connection(cinnox_sandbox).model_copy(update={"rate_limit": Rate(1, 0.05)})

    async def burst() -> list[Any]:
        try:
            data = {"number_type": "cli"}
            return await asyncio.gather(*(call("get_number_list", data, conn) for _ in range(3)))
        finally:
            await close_all()

    with ThreadPoolExecutor(1) as pool:  # fresh loops, away from the test session's loop
        assert len(pool.submit(asyncio.run, burst()).result()) == 3
        assert len(pool.submit(asyncio.run, burst()).result()) == 3


async def test_no_error_message_nor_repr_carries_the_token(
    cinnox_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = connection(cinnox_sandbox)
    token = cinnox_sandbox.token
    errors: list[ConnectorError] = []
    control = cinnox_sandbox.control
    for fault in ({"code": 6451001}, {"status": 503}, {"code": 6451010}, {"code": 6451000}):
        control.add_fault("/send_sms", **fault)
        with pytest.raises(ConnectorError) as info:
            await call("send_sms", SMS, conn)
        errors.append(info.value)
    with pytest.raises(PermanentError) as info:
        await call("send_im_to_room", {"room_id": "nope", "text": "hi"}, conn)
    errors.append(info.value)
    control.regenerate_token(cinnox_sandbox.app_id)
    with pytest.raises(AuthError) as info:
        await call("send_sms", SMS, conn)
    errors.append(info.value)
    kinds = [type(e) for e in errors]
    assert kinds == [RetryableError] * 3 + [PermanentError] * 2 + [AuthError]
    shown = [str(e) for e in errors] + [repr(e) for e in errors]
    shown += [repr(CinnoxClient(conn, connection_name="main")), repr(conn), str(conn)]
    shown += [repr(context(conn)), str(conn.model_dump())]
    assert all(token not in text for text in shown)
    assert conn.app_token.get_secret_value() == token


async def test_dropdown_values_are_read_however_they_are_typed(cinnox_sandbox: Sandbox) -> None:
    data = {
        "first_name": "Tai Man",
        "last_name": "Chan",
        "level": "primary",
        "type": "CUSTOMER",
        "phone_type": "mobile",
        "phone_number": "+85291234500",
        "social_messaging_type": "woztell_whatsapp_cloud",
        "social_messaging_name_id": "85291234500",
    }
    out = await call("create_external_contact", data, connection(cinnox_sandbox))
    assert out.id and (out.level, out.phone_type) == ("Primary", "Mobile")
    [sent] = cinnox_sandbox.control.sent("contacts")
    body = sent["request"]
    assert (body["level"], body["type"]) == ("Primary", "Customer")
    assert body["phones"] == [{"type": "Mobile", "phone": "+85291234500"}]
    assert "WOZTELL (WhatsApp Cloud)" in body["socialContacts"]
