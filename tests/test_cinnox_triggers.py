"""The 13 CINNOX triggers: the seed's keys, samples, the wire mapping and the loader's checks."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from connectors import registry
from connectors.cinnox import triggers
from connectors.cinnox._app import app
from connectors.cinnox.reading import from_wire
from connectors.cinnox.triggers import FAMILY_OF, UnknownEvent, to_wire
from flows.errors import ZapValidationError
from flows.loader import load_zap_text

_ENQUIRY_KEYS = [
    "status",
    "enquiryID",
    "displayCaseNumber",
    "type",
    "channel",
    "date",
    "destination",
    "destination Types",
]

# From the seed's trigger table (shared/seed/cinnox-zapier-integration.txt): title, the keys in
# the table's order, and the fixed status value. Contact triggers also carry the contact "id".
SEED: dict[str, tuple[str, list[str], str | None]] = {
    "new_external_contact": ("New external contact created", ["status", "name", "id"], "create"),
    "external_contact_edited": ("External contact edited", ["status", "name", "id"], "edit"),
    "external_contact_merged": ("External contact merged", ["status", "name", "id"], "merge"),
    "external_contact_ownership_transferred": (
        "Transferred external contact ownership",
        ["status", "name", "fromOwnerID", "toOwnerID", "id"],
        "transfer",
    ),
    "external_contact_deleted": ("External contact deleted", ["status", "name", "id"], "delete"),
    "new_enquiry": ("New incoming enquiry", _ENQUIRY_KEYS, "Opened"),
    "enquiry_handled": ("Enquiry being handled by staff (agent)", _ENQUIRY_KEYS, "Handling"),
    "enquiry_closed": ("Enquiry closed", _ENQUIRY_KEYS, "Closed"),
    "missed_enquiry": ("Missed enquiry", _ENQUIRY_KEYS, "Missed"),
    "sms_delivery_receipt": (
        "Receive SMS delivery receipts status",
        [
            "transactionId",
            "recipientNumber",
            "recipientCountry",
            "responseCode",
            "status",
            "exception",
        ],
        None,
    ),
    "label_created": ("New Label created", ["status", "id", "name", "colorCode"], "create"),
    "label_edited": ("Label edited", ["status", "id", "name", "colorCode"], "update"),
    "label_deleted": ("Label deleted", ["status", "id", "name"], "deleted"),
}
SEED_FAMILY = {
    **dict.fromkeys(list(SEED)[:5], "external-contact"),
    **dict.fromkeys(list(SEED)[5:9], "inquiry"),
    "sms_delivery_receipt": "outbound-sms",
    **dict.fromkeys(list(SEED)[10:], "label"),
}
ALL_SAMPLES = [(name, s) for name, t in app.triggers.items() for s in t.samples]
SVC, APP_ID = "svc-hk-0001", "zapier-app-7"


def test_exactly_the_13_seed_triggers_are_registered() -> None:
    assert sorted(app.triggers) == sorted(SEED)
    assert registry.apps()["cinnox"] is app


@pytest.mark.parametrize("name", list(SEED))
def test_trigger_has_the_seed_keys_title_and_status(name: str) -> None:
    title, keys, status = SEED[name]
    trigger = app.triggers[name]
    model = trigger.payload_model
    assert trigger.kind == "webhook"
    assert trigger.title == title
    assert trigger.description.startswith("Trigger the action when")
    # The seed's keys in the seed's order, then `extra`: what CINNOX sent beyond them.
    assert [f.alias or n for n, f in model.model_fields.items()] == [*keys, "extra"]
    assert all(f.description for f in model.model_fields.values())
    assert model.model_config.get("extra") in (None, "ignore")
    assert 2 <= len(trigger.samples) <= 3
    if status is not None:
        assert {s["status"] for s in trigger.samples} == {status}
        wrong = {**trigger.samples[0], "status": "something-else"}
        with pytest.raises(ValidationError):
            model.model_validate(wrong)


def test_new_external_contact_description_is_about_contacts() -> None:
    description = app.triggers["new_external_contact"].description
    assert "new external contact" in description
    assert "enquiry" not in description


def test_sms_receipt_status_is_one_of_the_four_receipt_states() -> None:
    model = app.triggers["sms_delivery_receipt"].payload_model
    sample = app.triggers["sms_delivery_receipt"].samples[0]
    for status in ("Submitted", "Delivered", "Undelivered", "Rejected"):
        assert model.model_validate({**sample, "status": status}).status == status
    with pytest.raises(ValidationError):
        model.model_validate({**sample, "status": "Queued"})


def test_enquiry_type_and_channel_accept_values_beyond_the_examples() -> None:
    model = app.triggers["new_enquiry"].payload_model
    sample = {**app.triggers["new_enquiry"].samples[0], "type": "Campaign Chat", "channel": "X"}
    assert model.model_validate(sample).model_dump(by_alias=True) == {**sample, "extra": {}}


@pytest.mark.parametrize(("name", "sample"), ALL_SAMPLES)
def test_samples_validate_and_dump_back_by_alias(name: str, sample: dict[str, Any]) -> None:
    model = app.triggers[name].payload_model
    assert model.model_validate(sample).model_dump(mode="json", by_alias=True) == {
        **sample,
        "extra": {},
    }


def test_destination_types_by_alias_or_by_name() -> None:
    model = app.triggers["enquiry_handled"].payload_model
    sample = app.triggers["enquiry_handled"].samples[0]
    by_name = {k: v for k, v in sample.items() if k != "destination Types"}
    by_name["destination_types"] = "PSTN"
    assert model.model_validate(by_name).model_dump(by_alias=True)["destination Types"] == "PSTN"


def test_unknown_payload_keys_are_ignored() -> None:
    model = app.triggers["label_created"].payload_model
    sample = {**app.triggers["label_created"].samples[0], "createdAt": "2026-03-02"}
    assert "createdAt" not in model.model_validate(sample).model_dump(by_alias=True)


# --------------------------------------------------------------------------- from_wire


@pytest.mark.parametrize(
    ("status", "trigger"),
    [
        ("Opened", "new_enquiry"),
        ("Handling", "enquiry_handled"),
        ("Closed", "enquiry_closed"),
        ("Missed", "missed_enquiry"),
    ],
)
def test_enquiry_event(status: str, trigger: str) -> None:
    body = {
        "type": "inquiry",
        "status": status,
        "serviceId": SVC,
        "inquiryID": "9b3e7d1f-4a2c-4e86-b5d0-6c1f8a3e2b74",
        "displayCaseNumber": "ENQ-2026-001024",
        "inquiryType": "Direct Call",
        "channel": "Virtual Number",
        "channelOri": "PSTN",
        "socialId": "",
        "eid": "8c41d6a2-3e7f-4b95-a0d8-1f6e2c9b4a37",
        "date": "2026-03-02T09:15:27+08:00",
        "destination": "+85223456789",
        "destinationTypes": "PSTN",
    }
    assert from_wire("inquiry", body) == (
        trigger,
        {
            "status": status,
            "enquiryID": "9b3e7d1f-4a2c-4e86-b5d0-6c1f8a3e2b74",
            "displayCaseNumber": "ENQ-2026-001024",
            "type": "Direct Call",
            "channel": "Virtual Number",
            "date": "2026-03-02T09:15:27+08:00",
            "destination": "+85223456789",
            "destination Types": "PSTN",
            "extra": {
                "serviceId": SVC,
                "channelOri": "PSTN",
                "socialId": "",
                "eid": "8c41d6a2-3e7f-4b95-a0d8-1f6e2c9b4a37",
            },
        },
    )


def test_enquiry_event_without_destination() -> None:
    body = {
        "status": "Opened",
        "serviceId": SVC,
        "inquiryID": "e1",
        "displayCaseNumber": "ENQ-2026-000001",
        "inquiryType": "Broadcast Chat",
        "channel": "WhatsApp",
        "date": "2026-03-02T09:15:27+08:00",
    }
    name, payload = from_wire("inquiry", body)
    assert name == "new_enquiry"
    assert payload["destination"] is None and payload["destination Types"] is None


@pytest.mark.parametrize(
    ("status", "trigger"),
    [
        ("create", "new_external_contact"),
        ("edit", "external_contact_edited"),
        ("merge", "external_contact_merged"),
        ("delete", "external_contact_deleted"),
    ],
)
def test_contact_event(status: str, trigger: str) -> None:
    body = {
        "type": "message",
        "message": {
            "type": "contact",
            "status": status,
            "serviceId": SVC,
            "fullName": "Chan Tai Man",
            "id": "c-1",
        },
    }
    assert from_wire("external-contact", body) == (
        trigger,
        {"status": status, "name": "Chan Tai Man", "id": "c-1", "extra": {"serviceId": SVC}},
    )


def test_contact_transfer_event_carries_both_owners() -> None:
    body = {
        "type": "message",
        "message": {
            "type": "contact",
            "status": "transfer",
            "serviceId": SVC,
            "fullName": "Lee Ka Yan",
            "id": "c-2",
            "fromOwnerID": "staff-a",
            "toOwnerID": "staff-b",
        },
    }
    assert from_wire("external-contact", body) == (
        "external_contact_ownership_transferred",
        {
            "status": "transfer",
            "name": "Lee Ka Yan",
            "fromOwnerID": "staff-a",
            "toOwnerID": "staff-b",
            "id": "c-2",
            "extra": {"serviceId": SVC},
        },
    )


@pytest.mark.parametrize("status", ["Submitted", "Delivered", "Undelivered", "Rejected"])
def test_sms_receipt_event(status: str) -> None:
    body = {
        "Type": "tdr",
        "AppID": APP_ID,
        "ServiceID": SVC,
        "TransactionID": "t-1",
        "RecipientNumber": "+85291234567",
        "RecipientCountry": "HK",
        "ResponseCode": "1",
        "Status": status,
        "Exception": "Absent subscriber",
    }
    assert from_wire("outbound-sms", body) == (
        "sms_delivery_receipt",
        {
            "transactionId": "t-1",
            "recipientNumber": "+85291234567",
            "recipientCountry": "HK",
            "responseCode": "1",
            "status": status,
            "exception": "Absent subscriber",
            "extra": {"AppID": APP_ID, "ServiceID": SVC},
        },
    )


@pytest.mark.parametrize(
    ("status", "trigger", "expected"),
    [
        ("create", "label_created", {"colorCode": "#E53935", "extra": {}}),
        ("update", "label_edited", {"colorCode": "#E53935", "extra": {}}),
        # A deleted label has no colour among the seed's keys: kept as sent, under extra.
        ("deleted", "label_deleted", {"extra": {"colorCode": "#E53935"}}),
    ],
)
def test_label_event(status: str, trigger: str, expected: dict[str, Any]) -> None:
    body = {"type": "label", "status": status, "id": "l-1", "name": "VIP", "colorCode": "#E53935"}
    assert from_wire("label", body) == (
        trigger,
        {"status": status, "id": "l-1", "name": "VIP", **expected},
    )


# --------------------------------------------------------------------------- to_wire


def test_family_of_every_trigger() -> None:
    assert FAMILY_OF == SEED_FAMILY


@pytest.mark.parametrize(("name", "sample"), ALL_SAMPLES)
def test_round_trip_through_the_wire(name: str, sample: dict[str, Any]) -> None:
    family, body = to_wire(name, copy.deepcopy(sample), service_id=SVC, app_id=APP_ID)
    assert family == FAMILY_OF[name]
    read, payload = from_wire(family, body)
    extra = payload.pop("extra")
    assert (read, payload) == (name, {**sample})
    # What the wire carries beyond the seed's keys (the account's ids) is kept under extra.
    assert set(extra) <= {"serviceId", "AppID", "ServiceID"}


def test_to_wire_shapes() -> None:
    enquiry = app.triggers["new_enquiry"].samples[0]
    _, body = to_wire("new_enquiry", enquiry, service_id=SVC, app_id=APP_ID)
    assert body["inquiryID"] == enquiry["enquiryID"]
    assert body["inquiryType"] == enquiry["type"]
    assert body["destinationTypes"] == enquiry["destination Types"]
    assert (body["type"], body["serviceId"]) == ("inquiry", SVC)

    contact = app.triggers["new_external_contact"].samples[0]
    _, body = to_wire("new_external_contact", contact, service_id=SVC, app_id=APP_ID)
    assert body == {
        "type": "message",
        "message": {
            "type": "contact",
            "status": "create",
            "serviceId": SVC,
            "fullName": contact["name"],
            "id": contact["id"],
        },
    }

    receipt = app.triggers["sms_delivery_receipt"].samples[0]
    _, body = to_wire("sms_delivery_receipt", receipt, service_id=SVC, app_id=APP_ID)
    assert (body["Type"], body["AppID"], body["ServiceID"]) == ("tdr", APP_ID, SVC)
    assert body["TransactionID"] == receipt["transactionId"]
    assert "Exception" not in body  # a delivered receipt has no error


def test_to_wire_refuses_unknown_triggers_and_bad_payloads() -> None:
    with pytest.raises(UnknownEvent, match="unknown CINNOX trigger 'new_contact'.*accepted: "):
        to_wire("new_contact", {}, service_id=SVC, app_id=APP_ID)
    with pytest.raises(ValidationError):
        to_wire("label_created", {"status": "rename"}, service_id=SVC, app_id=APP_ID)
    with pytest.raises(ValueError, match="contact id"):
        to_wire(
            "new_external_contact",
            {"status": "create", "name": "Chan Tai Man"},
            service_id=SVC,
            app_id=APP_ID,
        )


# --------------------------------------------------------------------------- UnknownEvent


def test_unknown_event_is_a_value_error() -> None:
    assert issubclass(UnknownEvent, ValueError)


def test_unknown_family() -> None:
    with pytest.raises(UnknownEvent) as info:
        from_wire("call", {"status": "Opened"})
    assert "'call'" in str(info.value)
    for family in ("inquiry", "external-contact", "outbound-sms", "label"):
        assert family in str(info.value)


@pytest.mark.parametrize(
    ("family", "body", "where", "accepted"),
    [
        ("inquiry", {"status": "Reopened"}, "status 'Reopened'", "Opened, Handling, Closed"),
        (
            "external-contact",
            {"message": {"status": "archive"}},
            "message.status 'archive'",
            "create, edit, merge, transfer, delete",
        ),
        ("external-contact", {"fullName": "x"}, "status None", "create, edit"),
        ("label", {"status": "rename"}, "status 'rename'", "create, update, deleted"),
        ("label", {"status": ["create"]}, "status ['create']", "create, update, deleted"),
    ],
)
def test_status_without_trigger(
    family: str, body: dict[str, Any], where: str, accepted: str
) -> None:
    with pytest.raises(UnknownEvent) as info:
        from_wire(family, body)
    message = str(info.value)
    assert where in message and "starts no trigger" in message and accepted in message


def test_body_that_cannot_be_read_says_why() -> None:
    with pytest.raises(UnknownEvent, match="neither an enquiry id nor a displayCaseNumber"):
        from_wire("inquiry", {"status": "Opened", "serviceId": SVC})
    receipt = to_wire(
        "sms_delivery_receipt",
        app.triggers["sms_delivery_receipt"].samples[0],
        service_id=SVC,
        app_id=APP_ID,
    )[1]
    with pytest.raises(UnknownEvent, match=r"Status 'Queued', which starts no trigger"):
        from_wire("outbound-sms", {**receipt, "Status": "Queued"})
    with pytest.raises(UnknownEvent, match="no TransactionID"):
        from_wire("outbound-sms", {"Status": "Delivered"})
    with pytest.raises(UnknownEvent, match="name is an object where CINNOX's text was expected"):
        from_wire("label", {"status": "create", "id": "l", "name": {"en": "VIP"}})
    with pytest.raises(UnknownEvent, match="must be a JSON object"):
        from_wire("label", ["create"])  # type: ignore[arg-type]


def test_transfer_without_owners_is_read_with_them_empty() -> None:
    body = {
        "message": {"status": "transfer", "serviceId": SVC, "fullName": "Lee Ka Yan", "id": "c"}
    }
    name, payload = from_wire("external-contact", body)
    assert name == "external_contact_ownership_transferred"
    assert payload["fromOwnerID"] is None and payload["toOwnerID"] is None


# --------------------------------------------------------------------------- through the loader


def _zap(event: str, value: str, samples: str = "") -> str:
    return (
        "zap: cinnox-check\n"
        f"trigger:\n  app: cinnox\n  event: {event}\n  connection: hk-office\n{samples}"
        "steps:\n"
        "  - id: note\n"
        "    action: builtin.format_text\n"
        "    input:\n"
        "      transform: trim\n"
        f'      value: "{value}"\n'
    )


def test_loader_refuses_the_wire_name_of_a_seed_key() -> None:
    text = _zap("new_external_contact", "{{ trigger.fullName }}")
    with pytest.raises(ZapValidationError) as info:
        load_zap_text(text, "z.yaml")
    [problem] = [p for p in info.value.problems if p.path == "steps[0].input.value"]
    assert problem.file == "z.yaml" and problem.path == "steps[0].input.value"
    assert "has no field 'fullName'" in problem.message
    assert problem.message.endswith("its fields: status, name, id, extra")


def test_loader_suggests_name_for_full_name() -> None:
    with pytest.raises(ZapValidationError) as info:
        load_zap_text(_zap("new_external_contact", "{{ trigger.fullName }}"), "z.yaml")
    assert "did you mean 'name'" in str(info.value)


def test_loader_accepts_seed_keys_including_destination_types() -> None:
    samples = (
        "  samples:\n"
        "    - status: Missed\n"
        "      enquiryID: 8d1f6b3a\n"
        "      displayCaseNumber: ENQ-2026-001042\n"
        "      type: Direct Chat\n"
        "      channel: Messenger\n"
        '      date: "2026-03-02T22:48:19+08:00"\n'
        "      destination: staff-1\n"
        "      destination Types: STAFF\n"
    )
    value = (
        "{{ trigger.displayCaseNumber }} {{ trigger.channel }} {{ trigger['destination Types'] }}"
    )
    zap = load_zap_text(_zap("missed_enquiry", value, samples), "z.yaml")
    assert zap.trigger.event == "missed_enquiry"


def test_loader_refuses_the_python_name_of_destination_types() -> None:
    with pytest.raises(ZapValidationError, match="no field 'destination_types'"):
        load_zap_text(_zap("enquiry_closed", "{{ trigger.destination_types }}"), "z.yaml")


def test_module_exposes_the_mapping_tables() -> None:
    assert set(triggers.ENQUIRY_TRIGGERS) == {"Opened", "Handling", "Closed", "Missed"}
    assert set(triggers.CONTACT_TRIGGERS.values()) | set(triggers.LABEL_TRIGGERS.values()) | {
        triggers.SMS_TRIGGER
    } | set(triggers.ENQUIRY_TRIGGERS.values()) == set(SEED)
