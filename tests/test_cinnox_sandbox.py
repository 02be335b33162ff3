"""The CINNOX sandbox, over real HTTP on loopback: what a user trying zaps against it relies on."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import phonenumbers
import pytest
from typer.testing import CliRunner

from connectors._loopback import bind
from connectors.cinnox import wire
from connectors.cinnox.sandbox import SandboxControl, SandboxError
from connectors.cinnox.sandbox import demo as demo_data
from connectors.cinnox.sandbox import samples as sample_data
from connectors.cinnox.sandbox.cli import app as cli_app
from connectors.cinnox.sandbox.store import ACCOUNT_LIMIT_MESSAGE

if TYPE_CHECKING:
    from cinnox_sandbox_fixtures import Receiver, Sandbox

pytest_plugins = ["cinnox_sandbox_fixtures"]  # cinnox_sandbox, cinnox_receiver …

PETER = "64f0c2a7b1d3e5f7a9c0b101"
TOMMY = "60d5ec49f1a2c3b4d5e6f705"
CARE_ROOM = "6601b7e2a9c84d3f5e0d1a01"
HOTLINE = "+85235009000"


def code_of(reply: httpx.Response) -> int:
    return int(reply.json()["code"])


def refused(reply: httpx.Response, code: int = wire.Code.PARAMETER_ERROR) -> str:
    """The message of a CINNOX error reply, after checking its code and HTTP status."""
    body = reply.json()
    assert (reply.status_code, body["code"]) == (400, code), body
    return str(body["message"])


# --------------------------------------------------------------------------- accounts and auth


def test_first_start_has_one_account_to_connect_with(cinnox_sandbox: Sandbox) -> None:
    [account] = cinnox_sandbox.control.accounts()
    assert account["name"] == "zapflow"
    assert account["baseUrl"] == cinnox_sandbox.base_url
    assert len(account["appToken"]) >= 40 and account["appToken"] != account["appId"]
    assert cinnox_sandbox.call("GET", wire.STAFF_LIST).json()["code"] == 0


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic abc"}],
    ids=["missing", "unknown", "not-bearer"],
)
def test_requests_without_a_valid_token_are_refused(
    cinnox_sandbox: Sandbox, headers: dict[str, str]
) -> None:
    reply = cinnox_sandbox.api.get(cinnox_sandbox.prefix() + wire.STAFF_LIST, headers=headers)
    assert reply.status_code == 401
    assert code_of(reply) == wire.Code.UNAUTHORIZED


def test_a_token_works_only_for_its_own_app_id(cinnox_sandbox: Sandbox) -> None:
    other = cinnox_sandbox.control.add_account("second")
    mixed = cinnox_sandbox.call("GET", wire.STAFF_LIST, token=other["appToken"])
    assert mixed.status_code == 401 and "does not belong" in mixed.json()["message"]
    own = cinnox_sandbox.call(
        "GET", wire.STAFF_LIST, token=other["appToken"], app_id=other["appId"]
    )
    assert own.status_code == 200


def test_regenerate_breaks_the_old_token_at_once(cinnox_sandbox: Sandbox) -> None:
    old = cinnox_sandbox.token
    fresh = cinnox_sandbox.control.regenerate_token(cinnox_sandbox.app_id)
    assert fresh["appToken"] != old and fresh["appId"] == cinnox_sandbox.app_id
    reply = cinnox_sandbox.call("GET", wire.LABELS, token=old)
    assert reply.status_code == 401 and "regenerated" in reply.json()["message"]
    assert cinnox_sandbox.call("GET", wire.LABELS, token=fresh["appToken"]).status_code == 200


def test_deleting_an_account_ends_its_token_and_subscriptions(
    cinnox_sandbox: Sandbox, cinnox_receiver: Receiver
) -> None:
    hook = cinnox_receiver.hook()
    assert cinnox_sandbox.subscribe("inquiry", hook).status_code == 200
    assert len(cinnox_sandbox.control.subscriptions()) == 1
    cinnox_sandbox.control.delete_account("zapflow")  # by name works too
    reply = cinnox_sandbox.call("GET", wire.LABELS)
    assert reply.status_code == 401 and "deleted" in reply.json()["message"]
    assert cinnox_sandbox.control.subscriptions() == []
    assert cinnox_sandbox.control.emit("new_enquiry")["deliveries"] == []


def test_at_most_ten_accounts_with_cinnox_message(cinnox_sandbox: Sandbox) -> None:
    control = cinnox_sandbox.control
    for n in range(2, 11):
        control.add_account(f"account {n}")
    with pytest.raises(SandboxError) as refusal:
        control.add_account("eleventh")
    assert refusal.value.status == 409
    assert str(refusal.value) == ACCOUNT_LIMIT_MESSAGE
    assert str(refusal.value).startswith("The limit of the Zapier Account created in CINNOX is 10.")
    control.delete_account("account 10")
    assert control.add_account("eleventh")["name"] == "eleventh"


def test_rename_changes_only_the_name(cinnox_sandbox: Sandbox) -> None:
    before = cinnox_sandbox.control.accounts()[0]
    after = cinnox_sandbox.control.rename_account(before["appId"], "HK Care automations")
    assert after["name"] == "HK Care automations"
    assert (after["appId"], after["appToken"]) == (before["appId"], before["appToken"])
    with pytest.raises(SandboxError):
        cinnox_sandbox.control.rename_account(before["appId"], "")


def test_state_survives_a_restart(cinnox_sandbox_factory: Any) -> None:
    with cinnox_sandbox_factory() as (_, control):
        added = control.add_account("kept")
    with cinnox_sandbox_factory() as (base_url, control):
        assert [a["name"] for a in control.accounts()] == ["zapflow", "kept"]
        reply = httpx.get(
            base_url + wire.API_PREFIX.format(app_id=added["appId"]) + wire.LABELS,
            headers={"Authorization": f"Bearer {added['appToken']}"},
        )
        assert reply.status_code == 200


# --------------------------------------------------------------------------- enquiries


def test_enquiry_detail_by_case_number_or_id(cinnox_sandbox: Sandbox) -> None:
    by_case = cinnox_sandbox.call("GET", wire.ENQUIRY_DETAIL, params={"enquiryID": "C100208"})
    detail = wire.EnquiryDetail.model_validate(by_case.json())
    assert (detail.status, detail.channel, detail.displayCaseNumber) == (
        "Missed",
        "Virtual Number",
        "C100208",
    )
    assert detail.missedAt and detail.visitorName == "Gary Kwok"
    by_id = cinnox_sandbox.call("GET", wire.ENQUIRY_DETAIL, params={"enquiryID": detail.inquiry})
    assert by_id.json()["displayCaseNumber"] == "C100208"


def test_demo_enquiries_cover_every_status(cinnox_sandbox: Sandbox) -> None:
    enquiries = cinnox_sandbox.control.data("enquiries")
    assert {e["status"] for e in enquiries} == {"Opened", "Handling", "Closed", "Missed"}
    assert len({e["channel"] for e in enquiries}) >= 7
    handled = next(e for e in enquiries if e["displayCaseNumber"] == "C100203")
    assert handled["handledType"] == "STAFF" and handled["handledTarget"].startswith("60d5ec49")


def test_enquiry_detail_errors(cinnox_sandbox: Sandbox) -> None:
    assert refused(cinnox_sandbox.call("GET", wire.ENQUIRY_DETAIL)) == "enquiryID is required"
    unknown = cinnox_sandbox.call("GET", wire.ENQUIRY_DETAIL, params={"enquiryID": "C999999"})
    assert refused(unknown) == "invalid enquiryID"


# --------------------------------------------------------------------------- contacts

NEW_CONTACT = {
    "firstName": "Siu Ming",
    "lastName": "Wong",
    "level": "Primary",
    "type": "Customer",
    "phones": [{"type": "Mobile", "phone": "+85291112222"}],
    "emails": [{"type": "Work", "email": "siuming@example.com"}],
    "company": "Wong's Noodles",
    "team": "Kitchen",
    "language": "zh-hant",
    "birthDate": "01/10/1990",
    "addresses": {"street": "1 Temple Street", "city": "Yau Ma Tei", "country": "Hong Kong"},
    "socialContacts": {"WhatsApp": "+85291112222"},
}


def test_create_contact_then_find_it_by_full_name(
    cinnox_sandbox: Sandbox, cinnox_receiver: Receiver
) -> None:
    hook = cinnox_receiver.hook()
    cinnox_sandbox.subscribe("external-contact", hook)
    created = cinnox_sandbox.call("POST", wire.CREATE_CONTACT, json=NEW_CONTACT)
    new_id = wire.IdReply.model_validate(created.json()).id

    found = cinnox_sandbox.call("GET", wire.CONTACT_LIST, params={"fullName": "Siu Ming Wong"})
    listed = wire.ListReply.model_validate(found.json())
    assert listed.total == 1
    record = wire.ContactRecord.model_validate(listed.result[0])
    assert (record.id, record.mobilePhone, record.companyName, record.department) == (
        new_id,
        "+85291112222",
        "Wong's Noodles",
        "Kitchen",
    )
    assert (record.whatsApp, record.birthday, record.customerType) == (
        "+85291112222",
        "01/10/1990",
        "Customer",
    )
    partial = cinnox_sandbox.call("GET", wire.CONTACT_LIST, params={"fullName": "Siu Ming"})
    assert partial.json()["total"] == 0  # exact match only

    [event] = cinnox_receiver.wait(hook)
    message = wire.ContactEvent.model_validate(event).message
    assert (message.status, message.fullName, message.id) == ("create", "Siu Ming Wong", new_id)
    [received] = cinnox_sandbox.control.sent("contacts")
    assert received["request"] == NEW_CONTACT and received["result"]["action"] == "create"


def test_update_contact_fires_edit_event(
    cinnox_sandbox: Sandbox, cinnox_receiver: Receiver
) -> None:
    hook = cinnox_receiver.hook()
    cinnox_sandbox.subscribe("external-contact", hook)
    path = wire.UPDATE_CONTACT.format(contact_id=PETER)
    body = {
        "jobTitle": "COO",
        "phones": [{"type": "Work", "phone": "+85228001234"}],
        "addresses": {"city": "Central"},
    }
    assert cinnox_sandbox.call("PUT", path, json=body).json() == {"code": 0, "id": PETER}
    found = cinnox_sandbox.call("GET", wire.CONTACT_LIST, params={"fullName": "Peter Chan"})
    record = found.json()["result"][0]
    assert (record["jobTitle"], record["workPhone"], record["mobilePhone"]) == (
        "COO",
        "+85228001234",
        "+85291234567",
    )
    assert record["addresses"]["city"] == "Central"
    assert record["addresses"]["street"] == "18 Harbour Road"  # untouched fields stay
    [event] = cinnox_receiver.wait(hook)
    assert event["message"]["status"] == "edit" and event["message"]["id"] == PETER


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"firstName": "x" * 51}, "firstName exceed maximum limit 50"),
        ({"lastName": "x" * 51}, "lastName exceed maximum limit 50"),
        ({"company": "x" * 101}, "company exceed maximum limit 100"),
        ({"jobTitle": "x" * 101}, "jobTitle exceed maximum limit 100"),
        ({"team": "x" * 101}, "team exceed maximum limit 100"),
        ({"group": "x" * 101}, "group exceed maximum limit 100"),
        ({"addresses": {"zipcode": "12345678901"}}, "zipcode exceed maximum limit 10"),
        ({"addresses": {"street": "x" * 51}}, "street exceed maximum limit 50"),
        ({"addresses": {"country": "x" * 51}}, "country exceed maximum limit 50"),
        ({"socialContacts": {"LINE": "x" * 101}}, "exceed maximum limit 100"),
        ({"socialContacts": {"MySpace": "tom"}}, "invalid social messaging type"),
        ({"phones": [{"type": "Mobile", "phone": "91234567"}]}, "invalid phone"),
        ({"phones": [{"type": "Mobile", "phone": "+852 9123 4567"}]}, "invalid phone"),
        ({"phones": [{"type": "Fax", "phone": "+85291234567"}]}, "phones.0.type"),
        ({"emails": [{"type": "Work", "email": "not-an-email"}]}, "invalid email"),
        ({"birthDate": "1990-10-01"}, "invalid birthDate"),
        ({"birthDate": "31/02/1990"}, "invalid birthDate"),
        ({"level": "Gold"}, "level"),
        ({"type": "Partner"}, "type"),
        ({"language": "fr"}, "invalid language"),
    ],
)
def test_contact_validation(cinnox_sandbox: Sandbox, change: dict, message: str) -> None:
    body = {"firstName": "Valid", **change}
    assert message in refused(cinnox_sandbox.call("POST", wire.CREATE_CONTACT, json=body))
    path = wire.UPDATE_CONTACT.format(contact_id=PETER)
    assert message in refused(cinnox_sandbox.call("PUT", path, json=change))


def test_contact_create_needs_a_name_and_update_a_known_id(cinnox_sandbox: Sandbox) -> None:
    nameless = cinnox_sandbox.call("POST", wire.CREATE_CONTACT, json={"company": "Nobody Ltd"})
    assert "firstName or lastName" in refused(nameless)
    unknown = wire.UPDATE_CONTACT.format(contact_id="000000000000000000000000")
    assert refused(cinnox_sandbox.call("PUT", unknown, json={"jobTitle": "x"})) == (
        "invalid contactID"
    )
    assert cinnox_sandbox.control.sent("contacts") == []


def test_lists_page_with_offset_and_limit(cinnox_sandbox: Sandbox) -> None:
    everyone = cinnox_sandbox.call("GET", wire.CONTACT_LIST).json()
    seeded = len(demo_data.CONTACTS) + len(sample_data.contacts({}, demo_data.STAFF[0]))
    assert everyone["total"] == len(everyone["result"]) == seeded
    page = cinnox_sandbox.call("GET", wire.CONTACT_LIST, params={"offset": 5, "limit": 3}).json()
    assert page["total"] == seeded
    assert [c["id"] for c in page["result"]] == [c["id"] for c in everyone["result"][5:8]]
    too_many = cinnox_sandbox.call("GET", wire.CONTACT_LIST, params={"limit": 501})
    assert refused(too_many) == "limit exceed maximum limit 500"
    assert "offset" in refused(cinnox_sandbox.call("GET", wire.STAFF_LIST, params={"offset": -1}))
    assert "limit" in refused(cinnox_sandbox.call("GET", wire.LABELS, params={"limit": "ten"}))


def test_staff_list(cinnox_sandbox: Sandbox) -> None:
    staff = wire.ListReply.model_validate(cinnox_sandbox.call("GET", wire.STAFF_LIST).json())
    assert staff.total == 11  # HK Care's 8, and the 3 the trigger samples name
    assert all(wire.StaffRecord.model_validate(s).eid for s in staff.result)
    tommy = cinnox_sandbox.call("GET", wire.STAFF_LIST, params={"fullName": "Tommy Siu"}).json()
    assert [s["eid"] for s in tommy["result"]] == [TOMMY]


# --------------------------------------------------------------------------- IMs


def test_message_push_to_room_and_to_staff(cinnox_sandbox: Sandbox) -> None:
    to_room = wire.MessagePush(roomID=CARE_ROOM, messages=[wire.TextMessage(text="New VIP order")])
    reply = cinnox_sandbox.call("POST", wire.MESSAGE_PUSH, json=to_room.model_dump())
    assert wire.MessagePushReply.model_validate(reply.json()).result["roomID"] == CARE_ROOM
    to_staff = {"receiverEID": TOMMY, "messages": [{"type": "text", "text": "Call Ivan back"}]}
    reply = cinnox_sandbox.call("POST", wire.MESSAGE_PUSH, json=to_staff)
    assert reply.json()["code"] == 0 and reply.json()["result"]["messageID"]
    sent = cinnox_sandbox.control.sent("im")
    assert [s["result"]["to"] for s in sent] == ["Tommy Siu", "Customer Care HK"]
    assert sent[1]["request"]["messages"][0]["text"] == "New VIP order"


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        ({"roomID": "nope", "messages": [{"text": "hi"}]}, 3000205, "destination not found"),
        ({"receiverEID": "nobody", "messages": [{"text": "hi"}]}, 3000205, "destination"),
        ({"roomID": CARE_ROOM, "messages": [{"text": "hi"}] * 11}, 6451000, "maximum limit 10"),
        ({"roomID": CARE_ROOM, "messages": [{"text": "x" * 5001}]}, 6451000, "limit 5000"),
        ({"roomID": CARE_ROOM, "messages": []}, 6451000, "messages is required"),
        ({"messages": [{"text": "hi"}]}, 6451000, "roomID or receiverEID is required"),
    ],
)
def test_message_push_errors(cinnox_sandbox: Sandbox, body: dict, code: int, message: str) -> None:
    assert message in refused(cinnox_sandbox.call("POST", wire.MESSAGE_PUSH, json=body), code)
    assert cinnox_sandbox.control.sent("im") == []


def test_ten_messages_of_5000_characters_are_accepted(cinnox_sandbox: Sandbox) -> None:
    body = {"roomID": CARE_ROOM, "messages": [{"type": "text", "text": "x" * 5000}] * 10}
    assert cinnox_sandbox.call("POST", wire.MESSAGE_PUSH, json=body).json()["code"] == 0


# --------------------------------------------------------------------------- SMS and numbers


def sms(sender: str, recipient: str = "+85291234567", kind: str = "Virtual Number") -> dict:
    return {
        "numberType": kind,
        "senderNumber": sender,
        "recipientNumber": recipient,
        "text": "Your order is ready",
    }


def test_send_sms_from_a_virtual_or_service_number(cinnox_sandbox: Sandbox) -> None:
    reply = cinnox_sandbox.call(
        "POST", wire.SEND_SMS, json=sms(HOTLINE), headers={"Idempotency-Key": "zap-run-1"}
    )
    sent = wire.SendSmsReply.model_validate(reply.json())
    assert sent.status == "Submitted" and sent.transactionID and sent.serviceID
    by_sender_id = cinnox_sandbox.call(
        "POST", wire.SEND_SMS, json=sms("HKCARE", kind="Service Number")
    )
    assert by_sender_id.json()["code"] == 0
    listed = cinnox_sandbox.control.sent("sms")
    assert [s["request"]["senderNumber"] for s in listed] == ["HKCARE", HOTLINE]
    assert listed[1]["result"]["transactionID"] == sent.transactionID
    assert (listed[1]["idempotencyKey"], listed[1]["result"]["segments"]) == ("zap-run-1", 1)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (sms("HKCARE"), "Invalid senderNumber"),  # a Service Number, sent as Virtual Number
        (sms(HOTLINE, kind="Service Number"), "Invalid senderNumber"),
        (sms("+85239001234"), "Invalid senderNumber"),  # a DID without SMS
        (sms("+852800906000"), "Invalid senderNumber"),  # toll-free, no SMS
        (sms("+85236200001", kind="Service Number"), "Invalid senderNumber"),  # CUSTOM, no SMS
        (sms("+85200000000"), "Invalid senderNumber"),  # not the account's
        (sms(HOTLINE, recipient="91234567"), "Invalid recipientNumber"),
        ({**sms(HOTLINE), "numberType": "Mobile"}, "numberType"),
        ({**sms(HOTLINE), "text": ""}, "text is required"),
    ],
)
def test_send_sms_errors(cinnox_sandbox: Sandbox, body: dict, message: str) -> None:
    assert message in refused(cinnox_sandbox.call("POST", wire.SEND_SMS, json=body))


def test_sms_delivery_receipts_by_test_number(
    cinnox_sandbox: Sandbox, cinnox_receiver: Receiver
) -> None:
    hook = cinnox_receiver.hook()
    cinnox_sandbox.subscribe("outbound-sms", hook)
    expected = {
        "+85291234567": "Delivered",
        demo_data.UNDELIVERED_NUMBER: "Undelivered",
        demo_data.REJECTED_NUMBER: "Rejected",
    }
    transactions = {}
    for recipient in [*expected, demo_data.NO_RECEIPT_NUMBER]:
        reply = cinnox_sandbox.call("POST", wire.SEND_SMS, json=sms(HOTLINE, recipient))
        transactions[reply.json()["transactionID"]] = recipient
    events = [wire.SmsReceiptEvent.model_validate(e) for e in cinnox_receiver.wait(hook, 3)]
    got = {e.RecipientNumber: e.Status for e in events}
    assert got == expected
    for e in events:
        assert transactions[e.TransactionID] == e.RecipientNumber
        assert e.AppID == cinnox_sandbox.app_id and e.RecipientCountry == "HK"
        assert (e.Exception is None) == (e.Status == "Delivered")
    time.sleep(0.2)  # the no-receipt number never gets one
    assert len(cinnox_receiver.of(hook).events) == 3
    statuses = {
        s["request"]["recipientNumber"]: s["result"]["status"]
        for s in cinnox_sandbox.control.sent("sms")
    }
    assert statuses == {**expected, demo_data.NO_RECEIPT_NUMBER: "Submitted"}


@pytest.mark.parametrize(
    ("number_type", "types"),
    [("access-numbers", {"DID", "TF"}), ("cli", {"CUSTOM"}), ("sms-numbers", {"ALPHANUMERIC"})],
)
def test_number_lists(cinnox_sandbox: Sandbox, number_type: str, types: set[str]) -> None:
    reply = cinnox_sandbox.call("GET", wire.NUMBER_LIST.format(number_type=number_type))
    numbers = [wire.NumberRecord.model_validate(n) for n in reply.json()["result"]]
    assert {n.type for n in numbers} == types
    assert reply.json()["total"] == len(numbers)


def test_demo_phone_numbers_are_valid(cinnox_sandbox: Sandbox) -> None:
    """The client checks numbers strictly (phonenumbers' is_valid_number): demo numbers must
    pass, or zaps could not use them."""
    phones = [c["mobilePhone"] for c in demo_data.CONTACTS]
    phones += [n["number"] for n in demo_data.NUMBERS if n["number"].startswith("+")]
    phones += [p[2] for p in demo_data.NEW_CONTACTS]
    phones += [
        demo_data.UNDELIVERED_NUMBER,
        demo_data.REJECTED_NUMBER,
        demo_data.NO_RECEIPT_NUMBER,
    ]
    invalid = [p for p in phones if not phonenumbers.is_valid_number(phonenumbers.parse(p))]
    assert invalid == []


def test_labels_filter_by_name_and_id(cinnox_sandbox: Sandbox) -> None:
    labels = cinnox_sandbox.call("GET", wire.LABELS).json()
    assert labels["total"] == 5
    assert all(wire.Label.model_validate(x).colorName for x in labels["result"])
    vip = cinnox_sandbox.call("GET", wire.LABELS, params={"name": "VIP"}).json()["result"]
    assert [x["name"] for x in vip] == ["VIP"]
    by_id = cinnox_sandbox.call("GET", wire.LABELS, params={"id": vip[0]["id"]}).json()
    assert by_id["total"] == 1


def test_unknown_paths_and_methods(cinnox_sandbox: Sandbox) -> None:
    for path in ["/nope", "/foo-event-sub", "/other-numbers"]:
        reply = cinnox_sandbox.call("GET", path)
        assert (reply.status_code, code_of(reply)) == (404, wire.Code.METHOD_NOT_FOUND)
    wrong_method = cinnox_sandbox.call("GET", wire.SEND_SMS)
    assert (wrong_method.status_code, code_of(wrong_method)) == (405, wire.Code.METHOD_NOT_FOUND)
    outside = httpx.get(cinnox_sandbox.base_url + "/v2/whatever")
    assert (outside.status_code, code_of(outside)) == (404, wire.Code.METHOD_NOT_FOUND)
    bad_json = cinnox_sandbox.call("POST", wire.SEND_SMS, content=b"{not json")
    assert "not valid JSON" in refused(bad_json)


# --------------------------------------------------------------------------- rate limit


def test_rate_limit_per_account(cinnox_sandbox_factory: Any) -> None:
    with cinnox_sandbox_factory(rate_limit=3) as (base_url, control):
        first, second = control.accounts()[0], control.add_account("other")

        def get(account: dict) -> httpx.Response:
            return httpx.get(
                base_url + wire.API_PREFIX.format(app_id=account["appId"]) + wire.LABELS,
                headers={"Authorization": f"Bearer {account['appToken']}"},
            )

        assert [get(first).status_code for _ in range(3)] == [200, 200, 200]
        limited = get(first)
        assert limited.status_code == 429
        assert limited.json() == {"code": 6451010, "message": "too many requests"}
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert get(second).status_code == 200  # per account


# --------------------------------------------------------------------------- subscriptions


def test_subscription_handshake_and_unsubscribe(
    cinnox_sandbox: Sandbox, cinnox_receiver: Receiver
) -> None:
    hook = cinnox_receiver.hook()
    reply = wire.EventSubscriptionReply.model_validate(
        cinnox_sandbox.subscribe("inquiry", hook).json()
    )
    assert (reply.enabled, reply.url) == (True, hook)
    assert cinnox_receiver.of(hook).challenges == 1
    assert [(s["family"], s["url"]) for s in cinnox_sandbox.control.subscriptions()] == [
        ("inquiry", hook)
    ]
    path = wire.EVENT_SUB.format(family="inquiry")
    off = cinnox_sandbox.call("PATCH", path, json={"enabled": False, "url": hook})
    assert off.json()["enabled"] is False
    assert cinnox_sandbox.control.subscriptions() == []
    assert cinnox_sandbox.control.emit("new_enquiry")["deliveries"] == []


@pytest.mark.parametrize("challenge", ["wrong", "404"])
def test_subscription_refused_when_verification_fails(
    cinnox_sandbox: Sandbox, cinnox_receiver: Receiver, challenge: str
) -> None:
    hook = cinnox_receiver.hook(challenge=challenge)
    message = refused(cinnox_sandbox.subscribe("label", hook))
    assert message.startswith("url verification failed")
    assert cinnox_receiver.of(hook).challenges == 1
    assert cinnox_sandbox.control.subscriptions() == []


def test_subscription_refused_when_nothing_listens(cinnox_sandbox: Sandbox) -> None:
    sock = bind()  # a port nobody listens on
    port = sock.getsockname()[1]
    sock.close()
    reply = cinnox_sandbox.subscribe("inquiry", f"http://127.0.0.1:{port}/hook")
    assert refused(reply).startswith("url verification failed")
    assert "url verification failed" in refused(cinnox_sandbox.subscribe("inquiry", "ftp://x"))


# --------------------------------------------------------------------------- emitted events

TRIGGERS = {
    "new_external_contact": (wire.ContactEvent, "create"),
    "external_contact_edited": (wire.ContactEvent, "edit"),
    "external_contact_merged": (wire.ContactEvent, "merge"),
    "external_contact_ownership_transferred": (wire.ContactEvent, "transfer"),
    "external_contact_deleted": (wire.ContactEvent, "delete"),
    "new_enquiry": (wire.EnquiryEvent, "Opened"),
    "enquiry_handled": (wire.EnquiryEvent, "Handling"),
    "enquiry_closed": (wire.EnquiryEvent, "Closed"),
    "missed_enquiry": (wire.EnquiryEvent, "Missed"),
    "sms_delivery_receipt": (wire.SmsReceiptEvent, "Delivered"),
    "label_created": (wire.LabelEvent, "create"),
    "label_edited": (wire.LabelEvent, "update"),
    "label_deleted": (wire.LabelEvent, "deleted"),
}
FAMILIES = {
    wire.ContactEvent: "external-contact",
    wire.EnquiryEvent: "inquiry",
    wire.SmsReceiptEvent: "outbound-sms",
    wire.LabelEvent: "label",
}


def status_of(event: dict) -> str:
    return str(event.get("message", event).get("status") or event.get("Status"))


def test_every_trigger_delivers_its_wire_event(
    cinnox_sandbox: Sandbox, cinnox_receiver: Receiver
) -> None:
    hooks = {family: cinnox_receiver.hook() for family in FAMILIES.values()}
    for family, hook in hooks.items():
        assert cinnox_sandbox.subscribe(family, hook).status_code == 200
    assert {t["trigger"] for t in cinnox_sandbox.control.triggers()} == set(TRIGGERS)
    sent = dict.fromkeys(hooks.values(), 0)
    for trigger, (model, status) in TRIGGERS.items():
        emitted = cinnox_sandbox.control.emit(trigger)
        assert emitted["family"] == FAMILIES[model] and len(emitted["deliveries"]) == 1
        hook = hooks[FAMILIES[model]]
        sent[hook] += 1
        delivered = cinnox_receiver.wait(hook, sent[hook])[-1]
        assert delivered == emitted["event"]
        model.model_validate(delivered)
        assert status_of(delivered) == status, trigger
    deliveries = cinnox_sandbox.control.wait_for_deliveries(len(TRIGGERS))
    assert all(d["state"] == "delivered" and d["attempts"] == 1 for d in deliveries)
    assert {d["url"] for d in deliveries} == set(hooks.values())


def enquiry(sandbox: Sandbox, ref: str) -> dict:
    return sandbox.call("GET", wire.ENQUIRY_DETAIL, params={"enquiryID": ref}).json()


def test_emitted_enquiries_can_be_fetched(cinnox_sandbox: Sandbox) -> None:
    control = cinnox_sandbox.control
    missed = control.emit("missed_enquiry")["event"]
    detail = enquiry(cinnox_sandbox, missed["displayCaseNumber"])
    assert (detail["code"], detail["status"], detail["inquiry"]) == (
        0,
        "Missed",
        missed["inquiryID"],
    )
    handled = control.emit("enquiry_handled", {"displayCaseNumber": "C100201", "eid": TOMMY})
    assert handled["event"]["eid"] == TOMMY
    assert enquiry(cinnox_sandbox, "C100201")["handledTarget"] == TOMMY
    control.emit("enquiry_closed", {"displayCaseNumber": "C100201"})
    closed = enquiry(cinnox_sandbox, "C100201")
    assert closed["status"] == "Closed" and closed["closedAt"] >= closed["pickedUpAt"]
    named = control.emit("missed_enquiry", {"displayCaseNumber": "FOLLOW-1", "channel": "WhatsApp"})
    assert enquiry(cinnox_sandbox, "FOLLOW-1")["channel"] == "WhatsApp"
    assert named["event"]["channel"] == "WhatsApp"


def test_emitted_contact_changes_show_in_the_api(cinnox_sandbox: Sandbox) -> None:
    control = cinnox_sandbox.control

    def by_name(name: str) -> list[dict]:
        reply = cinnox_sandbox.call("GET", wire.CONTACT_LIST, params={"fullName": name})
        return reply.json()["result"]

    control.emit("new_external_contact", {"name": "Ka Ming Ho"})
    assert by_name("Ka Ming Ho")[0]["firstName"] == "Ka"
    moved = control.emit(
        "external_contact_ownership_transferred", {"id": PETER, "toOwnerID": TOMMY}
    )["event"]["message"]
    assert (moved["fromOwnerID"], moved["toOwnerID"]) == ("60d5ec49f1a2c3b4d5e6f702", TOMMY)
    assert by_name("Peter Chan")[0]["ownerName"] == "Tommy Siu"
    merged = control.emit("external_contact_merged", {"id": PETER})["event"]["message"]
    assert merged["id"] == PETER
    [peter] = by_name("Peter Chan")
    assert len(peter["slaveContacts"]) == 1
    deleted = control.emit("external_contact_deleted", {"id": PETER})["event"]["message"]
    assert deleted["fullName"] == "Peter Chan" and by_name("Peter Chan") == []
    with pytest.raises(SandboxError) as gone:
        control.emit("external_contact_edited", {"id": PETER})
    assert gone.value.status == 404


def test_emitted_labels_show_in_the_api(cinnox_sandbox: Sandbox) -> None:
    control = cinnox_sandbox.control
    created = control.emit("label_created", {"name": "Escalated", "colorCode": "#E53935"})
    label_id = created["event"]["id"]
    [label] = cinnox_sandbox.call("GET", wire.LABELS, params={"id": label_id}).json()["result"]
    assert (label["name"], label["colorName"]) == ("Escalated", "Red")
    control.emit("label_deleted", {"id": label_id})
    assert cinnox_sandbox.call("GET", wire.LABELS, params={"id": label_id}).json()["total"] == 0


def test_emit_overrides_and_one_account(cinnox_sandbox: Sandbox, cinnox_receiver: Receiver) -> None:
    control = cinnox_sandbox.control
    other = control.add_account("other")
    mine, theirs = cinnox_receiver.hook(), cinnox_receiver.hook()
    cinnox_sandbox.subscribe("outbound-sms", mine)
    cinnox_sandbox.subscribe("outbound-sms", theirs, other)
    cinnox_sandbox.call("POST", wire.SEND_SMS, json=sms(HOTLINE, "+85298765432"))
    cinnox_receiver.wait(mine)  # the send's own receipt goes to every subscribed account
    cinnox_receiver.wait(theirs)
    emitted = control.emit(
        "sms_delivery_receipt",
        {"status": "Rejected", "Exception": "Blocked"},  # seed-style key, case-insensitive
        account="other",
    )
    assert len(emitted["deliveries"]) == 1
    [_, receipt] = cinnox_receiver.wait(theirs, 2)
    assert (receipt["Status"], receipt["Exception"]) == ("Rejected", "Blocked")
    assert receipt["RecipientNumber"] == "+85298765432"
    time.sleep(0.1)
    assert len(cinnox_receiver.of(mine).events) == 1
    with pytest.raises(SandboxError, match="not a field"):
        control.emit("new_enquiry", {"colour": "red"})
    with pytest.raises(SandboxError, match="would not be valid"):
        control.emit("missed_enquiry", {"status": "Lost"})
    with pytest.raises(SandboxError, match="unknown trigger"):
        control.emit("new_order")


def test_failed_deliveries_are_retried_and_recorded(
    cinnox_sandbox: Sandbox, cinnox_receiver: Receiver
) -> None:
    flaky, broken = cinnox_receiver.hook(fail=2), cinnox_receiver.hook(fail=99)
    cinnox_sandbox.subscribe("label", flaky)
    other = cinnox_sandbox.control.add_account("other")
    assert cinnox_sandbox.subscribe("label", broken, other).status_code == 200
    emitted = cinnox_sandbox.control.emit("label_created")
    [event] = cinnox_receiver.wait(flaky)
    assert event == emitted["event"]
    deliveries = {d["url"]: d for d in cinnox_sandbox.control.wait_for_deliveries(2)}
    assert (deliveries[flaky]["state"], deliveries[flaky]["attempts"]) == ("delivered", 3)
    from cinnox_sandbox_fixtures import FAST

    attempts = 1 + len(FAST["retry_delays"])
    assert deliveries[broken]["state"] == "failed"
    assert deliveries[broken]["attempts"] == attempts
    assert (deliveries[broken]["lastStatus"], deliveries[broken]["lastError"]) == (500, "HTTP 500")
    assert deliveries[broken]["body"] == emitted["event"]


def test_the_api_answers_before_the_webhook_is_delivered(
    cinnox_sandbox: Sandbox, cinnox_receiver: Receiver
) -> None:
    hook = cinnox_receiver.hook(delay=1.0)  # a receiver that takes a second to answer
    cinnox_sandbox.subscribe("external-contact", hook)
    started = time.monotonic()
    reply = cinnox_sandbox.call("POST", wire.CREATE_CONTACT, json={"firstName": "Async"})
    assert reply.json()["code"] == 0 and time.monotonic() - started < 0.8
    assert cinnox_receiver.of(hook).events == []  # not yet: delivery runs in the background
    cinnox_receiver.wait(hook)


# --------------------------------------------------------------------------- faults, reset


def test_faults_by_code_status_and_delay(cinnox_sandbox: Sandbox) -> None:
    control = cinnox_sandbox.control
    control.add_fault("/send_sms", code=6451001, times=2)
    for _ in range(2):
        reply = cinnox_sandbox.call("POST", wire.SEND_SMS, json=sms(HOTLINE))
        assert refused(reply, 6451001) == "bad response from service"
    assert cinnox_sandbox.call("POST", wire.SEND_SMS, json=sms(HOTLINE)).json()["code"] == 0
    assert len(control.sent("sms")) == 1  # faulted requests did nothing

    control.add_fault("/management/*", status=503)
    faulted = cinnox_sandbox.call("POST", wire.CREATE_CONTACT, json={"firstName": "X"})
    assert faulted.status_code == 503 and code_of(faulted) == 6451001

    control.add_fault("/labels", code=6451000, message="labels are off today")
    assert refused(cinnox_sandbox.call("GET", wire.LABELS)) == "labels are off today"

    control.add_fault("*", delay=0.6)
    with pytest.raises(httpx.ReadTimeout):
        cinnox_sandbox.call("GET", wire.LABELS, timeout=0.2)
    control.add_fault("/labels", delay=0.3)
    started = time.monotonic()
    assert cinnox_sandbox.call("GET", wire.LABELS).json()["code"] == 0
    assert time.monotonic() - started >= 0.3

    control.add_fault("/labels", code=6451010, times=5)
    assert [f["times"] for f in control.faults()] == [5]
    limited = cinnox_sandbox.call("GET", wire.LABELS)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
    control.clear_faults()
    assert control.faults() == []
    assert cinnox_sandbox.call("GET", wire.LABELS).status_code == 200
    with pytest.raises(SandboxError, match="a code, a status, a delay or reply changes"):
        control.add_fault("/labels")


def test_a_reply_fault_lets_the_call_succeed_in_another_shape(cinnox_sandbox: Sandbox) -> None:
    control = cinnox_sandbox.control
    control.add_fault("/send_sms", changes={"transactionID": None, "TransactionID": "t-9"})
    reply = cinnox_sandbox.call("POST", wire.SEND_SMS, json=sms(HOTLINE)).json()
    assert reply["code"] == 0 and reply["TransactionID"] == "t-9" and "transactionID" not in reply
    assert len(control.sent("sms")) == 1  # the SMS itself was sent
    assert "transactionID" in cinnox_sandbox.call("POST", wire.SEND_SMS, json=sms(HOTLINE)).json()
    with pytest.raises(SandboxError, match="either fails the request or changes its reply"):
        control.add_fault("/labels", code=6451000, changes={"x": 1})


def test_reset_restores_the_demo_data(cinnox_sandbox: Sandbox) -> None:
    control = cinnox_sandbox.control
    control.add_account("kept")
    cinnox_sandbox.call("POST", wire.CREATE_CONTACT, json={"firstName": "Temp"})
    cinnox_sandbox.call("POST", wire.SEND_SMS, json=sms(HOTLINE))
    control.emit("external_contact_deleted", {"id": PETER})
    control.reset()
    assert control.sent() == [] and control.deliveries() == []
    names = [c["firstName"] for c in cinnox_sandbox.call("GET", wire.CONTACT_LIST).json()["result"]]
    assert "Temp" not in names and "Peter" in names
    assert [a["name"] for a in control.accounts()] == ["zapflow", "kept"]
    control.reset(accounts=True)
    [account] = control.accounts()
    assert account["name"] == "zapflow" and account["appToken"] != cinnox_sandbox.token


# --------------------------------------------------------------------------- command line

runner = CliRunner()


def cli(*args: str, url: str) -> str:
    result = runner.invoke(cli_app, [*args, "--url", url])
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_drives_the_running_sandbox(cinnox_sandbox: Sandbox) -> None:
    url = cinnox_sandbox.base_url
    listing = cli("accounts", url=url)
    assert "zapflow" in listing and cinnox_sandbox.app_id in listing
    assert cinnox_sandbox.token not in listing  # tokens are shortened in the list
    added = cli("accounts", "add", "ops team", url=url)
    ops = next(a for a in cinnox_sandbox.control.accounts() if a["name"] == "ops team")
    assert ops["appToken"] in added  # a new account's credentials are shown once
    cli("accounts", "rename", ops["appId"], "ops", url=url)
    regenerated = cli("accounts", "regenerate", "ops", url=url)
    [ops_now] = [a for a in cinnox_sandbox.control.accounts() if a["name"] == "ops"]
    assert ops_now["appToken"] != ops["appToken"] and ops_now["appToken"] in regenerated
    cli("accounts", "delete", "ops", url=url)
    assert [a["name"] for a in cinnox_sandbox.control.accounts()] == ["zapflow"]

    out = cli("emit", "missed_enquiry", "--set", "displayCaseNumber=CLI-1", url=url)
    assert "CLI-1" in out and "no account is subscribed" in out
    assert enquiry(cinnox_sandbox, "CLI-1")["status"] == "Missed"
    assert "missed_enquiry" in cli("emit", "--list", url=url)

    cinnox_sandbox.call("POST", wire.SEND_SMS, json=sms(HOTLINE, "+85298765432"))
    assert "+85298765432" in cli("sent", "sms", url=url)
    assert "nothing received" in cli("sent", "im", url=url)
    assert "no deliveries" in cli("deliveries", url=url)
    assert "C100208" in cli("show", "enquiries", url=url)

    assert "fault #" in cli("fault", "/send_sms", "--code", "6451001", url=url)
    assert "/send_sms" in cli("fault", "--list", url=url)
    assert code_of(cinnox_sandbox.call("POST", wire.SEND_SMS, json=sms(HOTLINE))) == 6451001
    cli("fault", "/labels", "--reply", 'total="many"', "--reply", "result=", url=url)
    assert '"total": "many"' in cli("fault", "--list", url=url)
    labels = cinnox_sandbox.call("GET", wire.LABELS).json()
    assert labels["total"] == "many" and "result" not in labels
    cli("reset", url=url)
    assert cinnox_sandbox.control.sent() == []


def test_cli_errors(cinnox_sandbox: Sandbox) -> None:
    sock = bind()
    port = sock.getsockname()[1]
    sock.close()
    result = runner.invoke(cli_app, ["sent", "--url", f"http://127.0.0.1:{port}"])
    assert result.exit_code == 1 and "no sandbox answers" in result.output
    refused_cli = runner.invoke(cli_app, ["emit", "new_order", "--url", cinnox_sandbox.base_url])
    assert refused_cli.exit_code == 1 and "unknown trigger" in refused_cli.output
    bad_set = runner.invoke(
        cli_app, ["emit", "new_enquiry", "--set", "oops", "--url", cinnox_sandbox.base_url]
    )
    assert bad_set.exit_code == 1 and "key=value" in bad_set.output
    busy = bind()
    try:
        busy.listen()
        taken = runner.invoke(cli_app, ["serve", "--port", str(busy.getsockname()[1])])
        assert taken.exit_code == 1 and "cannot listen" in taken.output
    finally:
        busy.close()


def test_serve_prints_working_credentials(tmp_path: Path) -> None:
    sock = bind()
    port = sock.getsockname()[1]
    sock.close()
    env = {**os.environ, "ZAPFLOW_HOME": str(tmp_path), "COLUMNS": "200"}
    code = "from connectors.cinnox.sandbox.cli import app; app()"
    server = subprocess.Popen(
        [sys.executable, "-c", code, "serve", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert server.stdout is not None
        printed = ""
        while "Base URL" not in printed:
            line = server.stdout.readline()
            assert line, printed
            printed += line
        creds = dict(re.findall(r"^\s*(App ID|App Token|Base URL)\s+(\S+)", printed, re.M))
        assert creds["Base URL"] == f"http://127.0.0.1:{port}"
        with SandboxControl(creds["Base URL"]) as control:
            deadline = time.monotonic() + 10
            while True:
                try:
                    control.status()
                    break
                except Exception:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
        reply = httpx.get(
            creds["Base URL"] + wire.API_PREFIX.format(app_id=creds["App ID"]) + wire.STAFF_LIST,
            headers={"Authorization": f"Bearer {creds['App Token']}"},
        )
        assert reply.json()["total"] == len(demo_data.STAFF) + len(sample_data.staff())
        assert (tmp_path / "sandbox.db").exists()
    finally:
        server.terminate()
        server.wait(timeout=10)
