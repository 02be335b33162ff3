"""The example zaps in zaps/ run as shipped, with run history, against the CINNOX sandbox,
the Slack sandbox and a folder of sheets, and those peers show what the zaps did: a row in
follow-ups.xlsx and a Slack message for a missed enquiry, one row in contacts.xlsx per new
contact, an SMS when a request is approved in requests.xlsx."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import EXAMPLE_ZAPS
from openpyxl import Workbook, load_workbook
from waiting import until

from connectors import registry
from connectors.cinnox.reading import from_wire
from connectors.cinnox.sandbox.control import SandboxControl
from connectors.slack.sandbox import SlackSandbox, run_in_thread
from flows import connections
from flows.compiler import run_with_history
from flows.events import Event
from flows.intake.db import events
from flows.intake.inbox import Inbox
from flows.intake.pollers import Pollers
from flows.loader import load_zap_file
from flows.model import Zap

pytest_plugins = ["cinnox_sandbox_fixtures"]
pytestmark = pytest.mark.usefixtures("prefect_api")


@dataclass
class Peers:
    cinnox: Any
    slack: SlackSandbox
    sheets: Path


@pytest.fixture
def sandbox_connection(cinnox_sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The examples' connection "sandbox" pointed at the test's sandbox, as the demo does."""
    monkeypatch.setenv("ZAPFLOW_CINNOX_SANDBOX_APP_ID", cinnox_sandbox.app_id)
    monkeypatch.setenv("ZAPFLOW_CINNOX_SANDBOX_APP_TOKEN", cinnox_sandbox.token)
    monkeypatch.setenv("ZAPFLOW_CINNOX_SANDBOX_BASE_URL", cinnox_sandbox.base_url)
    connections.forget("cinnox", "sandbox")
    return cinnox_sandbox


@pytest.fixture(scope="module")
def running_slack() -> Iterator[SlackSandbox]:
    with run_in_thread() as slack:
        yield slack


@pytest.fixture
def peers(
    sandbox_connection: Any,
    running_slack: SlackSandbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Peers:
    """Every peer the examples use, as the demo sets them up: CINNOX's and Slack's sandboxes
    (connection "sandbox" of each) and a folder of sheets (spreadsheet connection "sheets")."""
    sheets = tmp_path / "sheets"
    sheets.mkdir()
    monkeypatch.setenv("ZAPFLOW_SPREADSHEET_SHEETS_FOLDER", str(sheets))
    monkeypatch.setenv("ZAPFLOW_SLACK_SANDBOX_BOT_TOKEN", running_slack.bot_token)
    monkeypatch.setenv("ZAPFLOW_SLACK_SANDBOX_API_BASE_URL", running_slack.api_base_url)
    connections.forget("spreadsheet", "sheets")
    connections.forget("slack", "sandbox")
    running_slack.reset()
    return Peers(sandbox_connection, running_slack, sheets)


def example(name: str) -> Zap:
    return load_zap_file(EXAMPLE_ZAPS / f"{name}.yaml").zap


def run(zap: Zap, payload: dict[str, Any]) -> Any:
    trigger = registry.trigger(zap.trigger.app, zap.trigger.event)
    event = Event(app=trigger.app, trigger=trigger.name, payload=payload)
    return asyncio.run(run_with_history(zap, event))


def run_sample(name: str, index: int) -> Any:
    zap = example(name)
    return run(zap, zap.trigger.samples[index])


def texts(sandbox: Any, kind: str) -> list[tuple[str, str]]:
    out = []
    for item in sandbox.control.sent(kind):
        request, result = item["request"], item["result"]
        text = request.get("text") or request["messages"][0]["text"]
        out.append((result.get("to") or request.get("recipientNumber"), text))
    return out


def rows(path: Path) -> list[dict[str, Any]]:
    """The sheet's rows as column → value (in the sheet's order), read without zapflow."""
    header, *body = load_workbook(path).worksheets[0].iter_rows(values_only=True)
    return [dict(zip(header, cells, strict=True)) for cells in body]


def header(path: Path) -> list[str]:
    return list(next(load_workbook(path).worksheets[0].iter_rows(values_only=True)))


# --------------------------------------------------------------------------- missed enquiry


def test_a_missed_enquiry_becomes_a_follow_up_row_a_slack_message_and_an_sms(
    peers: Peers,
) -> None:
    state = run_sample("missed-enquiry-follow-up", 0)
    assert state.is_completed(), state.message
    ((row,),) = [rows(peers.sheets / "follow-ups.xlsx")]
    link = row.pop("Link")
    assert row == {
        "Case": "C100208",
        "Enquiry ID": "66b2d4f6a8c0e1f3a5b7c908",
        "Type": "Broadcast Call",
        "Channel": "Virtual Number",
        "Customer": "Gary Kwok",
        "Missed at": "2026-11-25 14:10",
        "Status": "Open",
    }
    assert link.startswith("http") and "66b2d4f6a8c0e1f3a5b7c908" in link
    assert header(peers.sheets / "follow-ups.xlsx") == [
        "Case",
        "Enquiry ID",
        "Type",
        "Channel",
        "Customer",
        "Missed at",
        "Link",
        "Status",
    ]
    ((channel, message),) = peers.slack.messages()
    assert channel == "#customer-care"
    assert "*C100208* from Gary Kwok" in message and f"<{link}|Open the enquiry>" in message
    assert "row 2 of follow-ups.xlsx" in message
    ((room, item),) = texts(peers.cinnox, "im")
    assert room == "Customer Care HK"
    assert "C100208" in item and "66b2d4f6a8c0e1f3a5b7c908" in item and "Gary Kwok" in item
    ((number, sms),) = texts(peers.cinnox, "sms")
    assert number.startswith("+852") and "sorry we missed your call" in sms


def test_each_missed_enquiry_adds_its_own_row_under_the_others(peers: Peers) -> None:
    assert run_sample("missed-enquiry-follow-up", 0).is_completed()
    assert run_sample("missed-enquiry-follow-up", 1).is_completed()
    sheet = rows(peers.sheets / "follow-ups.xlsx")
    assert [(r["Case"], r["Channel"], r["Status"]) for r in sheet] == [
        ("C100208", "Virtual Number", "Open"),
        ("C100209", "LINE", "Open"),
    ]
    assert [m[1].count("row ") for m in peers.slack.messages()] == [1, 1]
    assert "row 3 of follow-ups.xlsx" in peers.slack.messages()[1][1]


def test_status_change_goes_to_the_space_or_the_assignee(sandbox_connection: Any) -> None:
    assert run_sample("status-change-im", 0).is_completed()
    assert run_sample("status-change-im", 1).is_completed()
    sent = dict(texts(sandbox_connection, "im"))
    assert "T-4821 escalated" in sent["Escalations"]
    assert sent["Tommy Siu"] == "T-4822 is now Resolved: Change delivery address"


# --------------------------------------------------------------------------- new contact


def test_a_new_contact_gets_one_row_even_when_its_event_runs_twice(peers: Peers) -> None:
    first = run_sample("new-contact-to-sheet", 0)
    again = run_sample("new-contact-to-sheet", 0)  # a redelivery, or someone re-ran it
    assert first.is_completed() and again.is_completed(), (first.message, again.message)
    assert rows(peers.sheets / "contacts.xlsx") == [
        {
            "Contact ID": "64f0c2a7b1d3e5f7a9c0b107",
            "Name": "Ivan Ng",
            "Mobile": "+85253001234",
            "Email": "ivan.ng@shatin.example",
            "Company": "Shatin Tech Park",
            "Owner": "Tommy Siu",
        }
    ]
    assert header(peers.sheets / "contacts.xlsx")[0] == "Contact ID"


def test_contacts_made_in_cinnox_each_get_their_row(peers: Peers) -> None:
    """Contacts the sandbox creates, as its new_external_contact events carry them."""
    zap = example("new-contact-to-sheet")
    control: SandboxControl = peers.cinnox.control
    made = []
    for _ in range(2):
        emitted = control.emit("new_external_contact")
        _, payload = from_wire(emitted["family"], emitted["event"])
        made.append(payload)
        assert run(zap, payload).is_completed()
    sheet = rows(peers.sheets / "contacts.xlsx")
    assert [(r["Contact ID"], r["Name"]) for r in sheet] == [(p["id"], p["name"]) for p in made]
    assert all(r["Mobile"] and r["Company"] for r in sheet)


# --------------------------------------------------------------------------- approved request

REQUESTS = ["Request", "Customer", "Mobile", "Region", "Status", "Pick-up"]


def save_requests(path: Path, table: list[list[Any]]) -> None:
    """Save the request sheet as a person's spreadsheet program does: a whole new file put in
    place of the old one (so a poll never reads half of it)."""
    book = Workbook()
    for cells in [REQUESTS, *table]:
        book.active.append(cells)
    handle, temp = tempfile.mkstemp(dir=path.parent, suffix=".xlsx")
    os.close(handle)
    book.save(temp)
    os.replace(temp, path)


async def poll_around(zap: Zap, inbox_db: Path, edit: Callable[[], None]) -> list[dict[str, Any]]:
    """What `zapflow serve`'s poller stores for ``zap``: its first poll, then ``edit``, then
    the polls after it; the payloads of the events it stored."""
    import sqlalchemy as sa

    inbox = await Inbox.open(f"sqlite+aiosqlite:///{inbox_db}")
    said: list[str] = []
    pollers = Pollers(inbox, min_interval=0.01, report=said.append)
    try:
        pollers.update([zap])
        await until(lambda: any("first poll noted 2 item(s)" in s for s in said))
        edit()
        async with inbox.engine.connect() as conn:
            query = sa.select(events.c.payload).order_by(events.c.seq)
            for _ in range(300):
                found = [r.payload for r in await conn.execute(query)]
                if len(found) >= 2:
                    break
                await asyncio.sleep(0.03)
        await asyncio.sleep(0.3)  # more polls: nothing more
        async with inbox.engine.connect() as conn:
            return [r.payload for r in await conn.execute(query)]
    finally:
        await pollers.stop()
        await inbox.close()


def test_approving_a_request_in_the_sheet_texts_the_customer_and_rejecting_does_not(
    peers: Peers, tmp_path: Path
) -> None:
    sheet = peers.sheets / "requests.xlsx"
    pickup = datetime(2026, 11, 27, 10, 0)
    pending = [
        ["R-2291", "kelvin lee", "9876 5432", "HK", "Pending", pickup],
        ["R-2292", "joyce lam", "+65 9123 4567", "SG", "Pending", None],
    ]
    save_requests(sheet, pending)
    zap = example("approved-request-sms")
    options = {**zap.trigger.options, "interval": "50ms"}
    quick = zap.model_copy(update={"trigger": zap.trigger.model_copy(update={"options": options})})
    decided = [[*pending[0][:4], "Approved", pickup], [*pending[1][:4], "Rejected", None]]

    payloads = asyncio.run(
        poll_around(quick, tmp_path / "inbox.db", lambda: save_requests(sheet, decided))
    )

    assert [(p["change"], p["key"], p["row"]["Status"]) for p in payloads] == [
        ("updated", "R-2291", "Approved"),
        ("updated", "R-2292", "Rejected"),
    ]
    approved, rejected = (run(zap, p) for p in payloads)
    assert approved.is_completed(), approved.message
    assert rejected.name == "Filtered"
    assert texts(peers.cinnox, "sms") == [
        (
            "+85298765432",
            "Hi Kelvin Lee, your request R-2291 is approved. Pick-up: Fri 27 Nov, 10:00.",
        )
    ]


def test_the_approved_request_samples_work_for_zapflow_test(sandbox_connection: Any) -> None:
    approved = run_sample("approved-request-sms", 0)
    rejected = run_sample("approved-request-sms", 1)
    assert approved.is_completed() and rejected.name == "Filtered"
    ((number, sms),) = texts(sandbox_connection, "sms")
    assert number == "+85298765432"
    assert sms == "Hi Kelvin Lee, your request R-2291 is approved. Pick-up: Fri 27 Nov, 10:00."


# --------------------------------------------------------------------------- run history


def test_the_app_token_never_reaches_run_history(peers: Peers) -> None:
    """Parameters, task runs and logs of a CINNOX run: rendered inputs and outputs are there,
    the App Token and the Slack bot token nowhere."""
    import json
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )

    state = run_sample("missed-enquiry-follow-up", 0)
    run_id = state.state_details.flow_run_id

    async def history() -> str:
        async with get_client() as client:
            deadline = time.monotonic() + 30
            while True:
                logs = await client.read_logs(
                    log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]))
                )
                if sum("input:" in log.message for log in logs) >= 4 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.3)
            run = await client.read_flow_run(run_id)
            tasks = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
            )
        parts = [run.model_dump_json(), *(t.model_dump_json() for t in tasks)]
        return json.dumps([*parts, *(log.message for log in logs)])

    recorded = asyncio.run(history())
    assert "C100208" in recorded and "6601b7e2a9c84d3f5e0d1a01" in recorded
    assert recorded.count("input:") >= 4
    assert peers.cinnox.token not in recorded
    assert peers.slack.bot_token not in recorded
