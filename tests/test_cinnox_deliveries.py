"""CINNOX deliveries as CINNOX may really send them: every trigger in more than one plausible
wire spelling, over real HTTP into a real inbox. Each is either read into its trigger with the
seed's keys, or kept as unrecognised and read later — never refused, never lost."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner

from connectors.cinnox import reading
from connectors.cinnox._app import app as cinnox
from connectors.cinnox.triggers import FAMILY_OF, to_wire
from flows.cli import app as cli
from flows.intake import unrecognised
from flows.intake.inbox import Inbox
from flows.intake.receiver import AppHook, Hooks, create_app

SVC, APP_ID = "svc-hk-1", "app-1"
runner = CliRunner()


async def invoke(args: list[str]) -> Any:
    """The command line, off the event loop the receiver runs on (it runs its own)."""
    return await asyncio.to_thread(runner.invoke, cli, args)


@dataclass
class Running:
    inbox: Inbox
    inbox_url: str
    client: httpx.AsyncClient

    async def post(self, family: str, body: dict[str, Any]) -> dict[str, Any]:
        reply = await self.client.post(f"/hooks/cinnox/main/tok/{family}", json=body)
        assert reply.status_code == 200, reply.text  # never a 4xx for an authenticated sender
        return reply.json()

    async def events(self) -> list[Any]:
        return await self.inbox.claim("test", limit=1000, lease=60)


@pytest.fixture
async def receiver(tmp_path: Path) -> AsyncIterator[Running]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'inbox.db'}"
    inbox = await Inbox.open(url)
    hooks = Hooks(zaps={}, apps={("cinnox", "main"): AppHook("cinnox", "main", "tok")})
    server = uvicorn.Server(
        uvicorn.Config(create_app(inbox, lambda: hooks), port=0, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        yield Running(inbox, url, client)
    server.should_exit = True
    await task
    await inbox.close()


# --------------------------------------------------------------------------- spellings

Spelling = Callable[[dict[str, Any]], dict[str, Any]]


def _rename(body: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    return {names.get(k, k): v for k, v in body.items()}


def enquiry_public_keys_only(body: dict[str, Any]) -> dict[str, Any]:
    """Only the keys CINNOX's public docs list: no enquiry id, no enquiry type."""
    return {k: v for k, v in body.items() if k not in ("inquiryID", "inquiryType")}


def enquiry_snake_case(body: dict[str, Any]) -> dict[str, Any]:
    names = {
        "inquiryID": "inquiry_id",
        "displayCaseNumber": "display_case_number",
        "inquiryType": "inquiry_type",
        "destinationTypes": "destination_types",
        "serviceId": "service_id",
    }
    out = _rename(body, names)
    out["status"] = body["status"].upper()
    out["date"] = 1772414127000  # epoch milliseconds
    return out


def contact_flat(body: dict[str, Any]) -> dict[str, Any]:
    """The contact's keys at the top, ``name`` and ``contactId`` as the seed / other apps say."""
    message = dict(body["message"])
    names = {"fullName": "name", "id": "contactId"}
    return _rename(message, names)


def contact_synonyms(body: dict[str, Any]) -> dict[str, Any]:
    """Past-tense statuses, first and last name instead of the full name, Id not ID."""
    message = dict(body["message"])
    past = {"create": "created", "edit": "updated", "merge": "merged", "transfer": "transferred"}
    message["status"] = past.get(message["status"], "deleted")
    first, _, last = message.pop("fullName").partition(" ")
    message |= {"firstName": first, "lastName": last}
    for key in ("fromOwnerID", "toOwnerID"):
        if key in message:
            message[key[:-2] + "Id"] = message.pop(key)
    return {**body, "message": message}


def receipt_camel_case(body: dict[str, Any]) -> dict[str, Any]:
    out = {k[0].lower() + k[1:]: v for k, v in body.items()}
    out["responseCode"] = int(body["ResponseCode"])  # a number, not text
    return out


def receipt_smpp_status(body: dict[str, Any]) -> dict[str, Any]:
    smpp = {"Submitted": "ACCEPTD", "Delivered": "DELIVRD", "Undelivered": "UNDELIV"}
    status = smpp.get(body["Status"], "REJECTD")
    return {**body, "Status": status, "ResponseCode": int(body["ResponseCode"])}


def label_public_colour(body: dict[str, Any]) -> dict[str, Any]:
    """``colorName``, as CINNOX's labels API calls it."""
    return _rename(body, {"colorCode": "colorName"})


def label_prefixed(body: dict[str, Any]) -> dict[str, Any]:
    past = {"create": "created", "update": "updated", "deleted": "delete"}
    out = _rename(body, {"id": "labelId", "name": "labelName"})
    out["status"] = past[body["status"]]
    return out


SPELLINGS: dict[str, list[Spelling]] = {
    "inquiry": [enquiry_public_keys_only, enquiry_snake_case],
    "external-contact": [contact_flat, contact_synonyms],
    "outbound-sms": [receipt_camel_case, receipt_smpp_status],
    "label": [label_public_colour, label_prefixed],
}

CASES = [
    pytest.param(name, spelling, id=f"{name}-{spelling.__name__}")
    for name in FAMILY_OF
    for spelling in SPELLINGS[FAMILY_OF[name]]
]


def _seed_keys_match(name: str, sample: dict[str, Any], payload: dict[str, Any]) -> None:
    model = cinnox.triggers[name].payload_model
    keys = [f.alias or n for n, f in model.model_fields.items()]
    assert list(payload) == keys  # every seed key, in the seed's order, then extra
    for key, value in sample.items():
        if name in ("new_enquiry", "enquiry_handled", "enquiry_closed", "missed_enquiry"):
            if key == "enquiryID" and payload["enquiryID"] == sample["displayCaseNumber"]:
                continue  # no id on the wire: the display case number stands in
            if key == "type" and payload["type"] is None:
                continue  # no enquiry type on the wire
            if key == "date" and isinstance(payload["date"], str) and "Z" in payload["date"]:
                continue  # sent as epoch milliseconds
        assert payload[key] == value, key


@pytest.mark.parametrize(("name", "spelling"), CASES)
async def test_every_trigger_in_two_spellings_is_read_with_the_seed_keys(
    receiver: Running, name: str, spelling: Spelling
) -> None:
    for sample in cinnox.triggers[name].samples:
        family, body = to_wire(name, copy.deepcopy(sample), service_id=SVC, app_id=APP_ID)
        answer = await receiver.post(family, spelling(body))
        assert answer == {"code": 0, "accepted": 1}, answer
    stored = await receiver.events()
    assert [e.trigger for e in stored] == [name] * len(cinnox.triggers[name].samples)
    for event, sample in zip(stored, cinnox.triggers[name].samples, strict=True):
        _seed_keys_match(name, sample, event.payload)
    assert await unrecognised.waiting_count(receiver.inbox) == 0


async def test_what_the_reading_skips_is_kept_under_extra(receiver: Running) -> None:
    sample = cinnox.triggers["missed_enquiry"].samples[0]
    _, body = to_wire("missed_enquiry", sample, service_id=SVC, app_id=APP_ID)
    await receiver.post("inquiry", {**body, "channelOri": "PSTN", "queue": {"id": "q-7"}})
    (event,) = await receiver.events()
    assert event.payload["extra"] == {
        "serviceId": SVC,
        "channelOri": "PSTN",
        "queue": {"id": "q-7"},
    }


# --------------------------------------------------------------------------- unrecognised


UNREADABLE = [
    # (family, body, what the reason says)
    ("inquiry", {"status": "Abandoned", "inquiryID": "e-1", "date": "2026-03-02"}, "Abandoned"),
    ("inquiry", {"status": "Missed", "serviceId": SVC}, "neither an enquiry id"),
    ("outbound-sms", {"Status": "Queued", "TransactionID": "t-1"}, "Queued"),
    ("label", {"status": "create", "id": "l-1", "name": {"en": "VIP"}}, "name is an object"),
    ("inquiry-label", {"inquiryID": "e-1", "labelIds": ["l-1"]}, "unknown CINNOX event family"),
]


async def test_unreadable_deliveries_are_kept_not_refused(receiver: Running) -> None:
    kept = []
    for family, body, reason in UNREADABLE:
        answer = await receiver.post(family, body)
        assert answer["accepted"] == 0 and answer["unrecognised"]
        kept.append((answer["unrecognised"], family, body, reason))
    assert await receiver.events() == []
    listed = await unrecognised.listing(receiver.inbox)
    assert [(d.id, d.channel, d.body) for d in listed] == [(k, f, b) for k, f, b, _ in kept]
    for delivery, (*_, reason) in zip(listed, kept, strict=True):
        assert reason in delivery.reason and delivery.state == "waiting"
        assert delivery.app == "cinnox" and delivery.connection == "main"
    # Retention never forgets a delivery that still waits.
    from datetime import timedelta

    assert await unrecognised.purge(receiver.inbox, timedelta(0)) == 0
    assert await receiver.inbox.purge(timedelta(0)) == 0
    assert len(await unrecognised.listing(receiver.inbox)) == len(UNREADABLE)


async def test_a_kept_delivery_runs_once_the_reading_is_extended(
    receiver: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {"status": "Abandoned", "inquiryID": "e-9", "date": "2026-03-02T10:00:00+08:00"}
    kept = (await receiver.post("inquiry", body))["unrecognised"]
    (still,) = await unrecognised.reprocess(
        receiver.inbox, await unrecognised.listing(receiver.inbox)
    )
    assert still.events == [] and "Abandoned" in (still.error or "")
    assert (await unrecognised.listing(receiver.inbox))[0].attempts == 1

    # The connector learns that CINNOX calls an abandoned call a missed enquiry.
    statuses = {
        **reading.STATUSES,
        "inquiry": {**reading.STATUSES["inquiry"], "abandoned": "Missed"},
    }
    monkeypatch.setattr(reading, "STATUSES", statuses)
    (done,) = await unrecognised.reprocess(
        receiver.inbox, await unrecognised.listing(receiver.inbox)
    )
    assert done.error is None
    (made,) = done.events
    assert made.trigger == "missed_enquiry" and made.connection == "main"
    assert made.payload["enquiryID"] == "e-9" and made.payload["extra"] == {"status": "Abandoned"}
    (event,) = await receiver.events()  # in the inbox: serve's dispatcher runs its zaps
    assert event.id == made.id and event.trigger == "missed_enquiry"
    assert await unrecognised.listing(receiver.inbox) == []
    (record,) = await unrecognised.listing(receiver.inbox, waiting_only=False, ids=[kept[:8]])
    assert record.state == "reprocessed" and record.event_ids == [made.id]
    # Reprocessing again changes nothing: it is no longer waiting.
    (again,) = await unrecognised.reprocess(receiver.inbox, [record])
    assert again.events == [] and again.error == "already reprocessed"


async def test_the_command_line_lists_shows_and_reprocesses(
    receiver: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = (await receiver.post("outbound-sms", {"Status": "Queued", "TransactionID": "t-5"}))[
        "unrecognised"
    ]
    listed = await invoke(["events", "--unrecognised", "--inbox", receiver.inbox_url])
    assert listed.exit_code == 0, listed.output
    assert kept[:12] in listed.output and "outbound-sms" in listed.output
    assert "Queued" in listed.output
    shown = await invoke(["events", kept[:8], "--inbox", receiver.inbox_url])
    assert shown.exit_code == 0 and '"TransactionID": "t-5"' in shown.output

    failing = await invoke(
        ["reprocess", "--unrecognised", "--app", "cinnox", "--inbox", receiver.inbox_url]
    )
    assert failing.exit_code == 1 and "still cannot be read" in failing.output

    queued = {**reading.STATUSES["outbound-sms"], "queued": "Submitted"}
    monkeypatch.setattr(reading, "STATUSES", {**reading.STATUSES, "outbound-sms": queued})
    done = await invoke(["reprocess", kept[:10], "--inbox", receiver.inbox_url])
    assert done.exit_code == 0, done.output
    assert "cinnox.sms_delivery_receipt" in done.output
    (event,) = await receiver.events()
    assert event.payload["transactionId"] == "t-5" and event.payload["status"] == "Submitted"
    nothing = await invoke(["events", "--unrecognised", "--inbox", receiver.inbox_url])
    assert "no deliveries kept as unrecognised" in nothing.output

    refused = await invoke(["reprocess", "--inbox", receiver.inbox_url])
    assert refused.exit_code == 1 and "give delivery IDs" in refused.output


@pytest.mark.parametrize(
    "body",
    [{"challenge": "c-1"}, {"challenge": "c-1", "type": "url_verification", "appId": APP_ID}],
)
async def test_the_url_challenge_is_answered_with_keys_beside_it(
    receiver: Running, body: dict[str, Any]
) -> None:
    assert await receiver.post("inquiry", body) == {"code": 0, "result": {"challenge": "c-1"}}
    assert await receiver.events() == []
    assert await unrecognised.waiting_count(receiver.inbox) == 0


async def test_a_batch_is_read_whole_or_kept_whole(receiver: Running) -> None:
    bodies = [
        to_wire(name, cinnox.triggers[name].samples[0], service_id=SVC, app_id=APP_ID)[1]
        for name in ("new_enquiry", "missed_enquiry")
    ]
    assert await receiver.post("inquiry", bodies) == {"code": 0, "accepted": 2}
    assert [e.trigger for e in await receiver.events()] == ["new_enquiry", "missed_enquiry"]

    # One item it cannot read: the whole batch is kept, nothing of it runs yet.
    answer = await receiver.post("inquiry", [bodies[0], {**bodies[1], "status": "Parked"}])
    assert answer["accepted"] == 0
    (kept,) = await unrecognised.listing(receiver.inbox)
    assert kept.body == [bodies[0], {**bodies[1], "status": "Parked"}]
    assert kept.reason.startswith("item 1 of the batch: ") and "'Parked'" in kept.reason
    assert await receiver.events() == []
    # Any JSON at all, from the right sender, is kept.
    assert (await receiver.post("inquiry", "Missed ENQ-1"))["accepted"] == 0
    assert len(await unrecognised.listing(receiver.inbox)) == 2
