"""Every CINNOX trigger's samples run end to end against a fresh sandbox with `zapflow test`:
the sandbox holds every enquiry, contact and staff member a sample names. And a raw delivery,
as `zapflow sandbox emit` prints it, is tested with `--wire FAMILY` through the same reading as
the receiver."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from connectors import registry
from connectors.cinnox.triggers import CONTACT_TRIGGERS, ENQUIRY_TRIGGERS, FAMILY_OF
from flows import connections
from flows.cli import app

pytest_plugins = ["cinnox_sandbox_fixtures"]

runner = CliRunner()
CARE_ROOM = "6601b7e2a9c84d3f5e0d1a01"  # the demo's "Customer Care HK" Space


@pytest.fixture
def sandbox(cinnox_sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A freshly reset sandbox as connection "sandbox"."""
    monkeypatch.setenv("ZAPFLOW_CINNOX_SANDBOX_APP_ID", cinnox_sandbox.app_id)
    monkeypatch.setenv("ZAPFLOW_CINNOX_SANDBOX_APP_TOKEN", cinnox_sandbox.token)
    monkeypatch.setenv("ZAPFLOW_CINNOX_SANDBOX_BASE_URL", cinnox_sandbox.base_url)
    connections.forget("cinnox", "sandbox")
    return cinnox_sandbox


def steps_for(trigger: str) -> str:
    """Steps that look up what a sample of ``trigger`` names, the way a user's zap would."""
    if trigger in ENQUIRY_TRIGGERS.values():
        return """
          - id: detail
            action: cinnox.get_enquiry_detail
            input: {display_case_number: "{{ trigger.displayCaseNumber }}"}
          - id: tell
            action: cinnox.send_im_to_room
            input:
              room_id: ROOM
              text: "{{ steps.detail.displayCaseNumber }} is {{ steps.detail.status }}"
        """.replace("ROOM", CARE_ROOM)
    if trigger == CONTACT_TRIGGERS["transfer"]:
        return """
          - id: contact
            action: cinnox.get_external_contact_detail
            input: {full_name: "{{ trigger.name }}"}
          - id: tell
            action: cinnox.send_im_to_staff
            input: {staff_id: "{{ trigger.toOwnerID }}", text: "{{ trigger.name }} is yours now"}
        """
    if trigger in CONTACT_TRIGGERS.values():
        return """
          - id: contact
            action: cinnox.get_external_contact_detail
            input: {full_name: "{{ trigger.name }}"}
        """
    return """
          - id: tell
            action: cinnox.send_im_to_room
            input: {room_id: ROOM, text: "CINNOX says {{ trigger.status }}"}
        """.replace("ROOM", CARE_ROOM)


def write_zap(folder: Path, trigger: str, *, retries: int | None = None) -> Path:
    policy = f"\n        defaults: {{retries: {retries}}}" if retries is not None else ""
    text = textwrap.dedent(
        f"""\
        zap: on-{trigger.replace("_", "-")}
        trigger: {{app: cinnox, event: {trigger}, connection: sandbox}}{policy}
        steps:"""
    )
    path = folder / f"{trigger}.yaml"
    path.write_text(text + textwrap.dedent(steps_for(trigger)).rstrip() + "\n")
    return path


def zapflow(*args: str) -> Any:
    return runner.invoke(app, list(args))


DELETED = {s["id"] for s in registry.trigger("cinnox", CONTACT_TRIGGERS["delete"]).samples}
CASES = [
    (name, n)
    for name in FAMILY_OF
    for n in range(1, len(registry.trigger("cinnox", name).samples) + 1)
]


@pytest.mark.parametrize(("trigger", "sample"), CASES)
def test_every_trigger_sample_runs_against_a_fresh_sandbox(
    sandbox: Any, tmp_path: Path, trigger: str, sample: int
) -> None:
    zap = write_zap(tmp_path, trigger)
    result = zapflow("test", str(zap), "--sample", str(sample))
    assert result.exit_code == 0, result.output
    payload = registry.trigger("cinnox", trigger).samples[sample - 1]
    output = result.output
    if trigger in ENQUIRY_TRIGGERS.values():
        assert f'"inquiry": "{payload["enquiryID"]}"' in output
        [im] = sandbox.control.sent("im")
        assert im["request"]["messages"][0]["text"].startswith(payload["displayCaseNumber"])
    elif trigger == CONTACT_TRIGGERS["delete"] or payload.get("id") in DELETED:
        assert '"found": false' in output  # deleted in CINNOX: looked up, not there
    elif trigger in CONTACT_TRIGGERS.values():
        assert '"found": true' in output and f'"id": "{payload["id"]}"' in output
    else:
        assert len(sandbox.control.sent("im")) == 1


def test_a_raw_delivery_as_emit_prints_it_is_tested_with_wire(sandbox: Any, tmp_path: Path) -> None:
    sent = sandbox.control.emit("missed_enquiry", {"channel": "WhatsApp"})
    body = tmp_path / "delivery.json"
    body.write_text(json.dumps(sent["event"]))
    zap = write_zap(tmp_path, "missed_enquiry")

    result = zapflow("test", str(zap), "--event", str(body), "--wire", sent["family"])
    assert result.exit_code == 0, result.output
    assert f'"displayCaseNumber": "{sent["event"]["displayCaseNumber"]}"' in result.output
    assert '"status": "Missed"' in result.output

    plain = zapflow("test", str(zap), "--event", str(body))
    assert plain.exit_code == 1
    assert "this is a raw cinnox delivery" in plain.output
    assert "add `--wire inquiry`" in plain.output


def test_wire_says_when_a_delivery_is_another_trigger_or_unreadable(
    sandbox: Any, tmp_path: Path
) -> None:
    zap = write_zap(tmp_path, "missed_enquiry")
    closed = tmp_path / "closed.json"
    closed.write_text(json.dumps(sandbox.control.emit("enquiry_closed")["event"]))
    result = zapflow("test", str(zap), "--event", str(closed), "--wire", "inquiry")
    assert result.exit_code == 1
    assert "this delivery is enquiry_closed, but zap 'on-missed-enquiry' starts on" in result.output

    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps({"status": "Escalated", "displayCaseNumber": "C1"}))
    result = zapflow("test", str(zap), "--event", str(odd), "--wire", "inquiry")
    assert result.exit_code == 1
    assert "cinnox cannot read this delivery on channel 'inquiry'" in result.output
    assert "Escalated" in result.output and "unrecognised" in result.output


def test_zapflow_test_says_it_runs_each_step_once(sandbox: Any, tmp_path: Path) -> None:
    result = zapflow("test", str(write_zap(tmp_path, "label_created", retries=3)))
    assert result.exit_code == 0, result.output
    assert "note: zapflow test runs each step once; the retries: of tell apply" in result.output
    quiet = zapflow("test", str(write_zap(tmp_path, "label_edited")))
    assert "runs each step once" not in quiet.output
