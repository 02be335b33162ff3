"""A zap is compiled once into a plan: its runs execute the plan, looking nothing up again."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors import registry
from connectors._errors import StepInputError
from flows.events import Event
from flows.intake.folder import ZapFolder
from flows.loader import load_zap_text
from flows.plan import compile_plan, plan_of
from flows.runtime import ZapRun

ZAP = """
zap: plan-check
trigger:
  app: builtin
  event: catch_hook
defaults:
  retries: 4
  timeout: 20s
steps:
  - id: tier
    action: builtin.lookup
    retries: 1
    input:
      key: "{{ trigger.plan }}"
      table: {gold: "priority", silver: "normal"}
      fallback: "low"
  - id: route
    paths:
      - name: urgent
        when: "steps.tier.value == 'priority'"
        steps:
          - id: shout
            action: builtin.format_text
            input:
              value: "{{ trigger.name }}"
              transform: uppercase
      - name: other
        fallback: true
        steps:
          - id: quiet
            action: builtin.format_text
            input:
              value: "{{ trigger.name }}"
              transform: lowercase
"""


def test_a_plan_binds_each_step_with_its_policy_including_steps_in_paths() -> None:
    plan = compile_plan(load_zap_text(ZAP))
    assert set(plan.steps) == {"tier", "shout", "quiet"}
    assert plan.trigger.key == "builtin.catch_hook"
    tier, shout = plan.steps["tier"], plan.steps["shout"]
    assert tier.action.key == "builtin.lookup" and tier.app.name == "builtin"
    assert (tier.policy.retries, shout.policy.retries) == (1, 4)  # its own, else the zap's
    assert shout.policy.timeout is not None and shout.policy.timeout.total_seconds() == 20
    assert tier.task_key == "plan-check.tier"


async def test_a_compiled_zap_runs_without_looking_anything_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plan = plan_of(load_zap_text(ZAP))

    def no_lookups() -> dict[str, object]:
        raise AssertionError("a run looked the apps up in the registry")

    monkeypatch.setattr(registry, "apps", no_lookups)
    event = Event(app="builtin", trigger="catch_hook", payload={"plan": "gold", "name": "Ada"})
    outcome = await ZapRun(plan, event).execute()
    assert outcome.status == "completed", outcome.message
    assert outcome.outputs["shout"] == {"output": "ADA"}
    assert "quiet" not in outcome.outputs


def test_the_same_loaded_definition_is_compiled_once_a_changed_one_again() -> None:
    zap = load_zap_text(ZAP)
    assert plan_of(zap) is plan_of(zap)
    changed = load_zap_text(ZAP.replace("retries: 4", "retries: 2"))
    assert plan_of(changed) is not plan_of(zap)
    assert plan_of(changed).version != plan_of(zap).version
    assert plan_of(changed).steps["shout"].policy.retries == 2


def test_the_zap_folder_compiles_a_zap_when_its_file_is_loaded_or_changed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "plan-check.yaml"
    path.write_text(ZAP)
    folder = ZapFolder(tmp_path, report=lambda _: None)
    assert folder.refresh()
    [zap] = folder.zaps
    first = plan_of(zap)
    assert folder.refresh() is False and plan_of(folder.zaps[0]) is first  # unchanged: kept
    path.write_text(ZAP.replace("retries: 4", "retries: 3"))
    stamp = path.stat().st_mtime
    folder.stamps[path] = stamp - 1  # as if the edit came a second later
    assert folder.refresh()
    assert plan_of(folder.zaps[0]) is not first
    assert plan_of(folder.zaps[0]).steps["shout"].policy.retries == 3


async def test_an_event_that_does_not_fit_the_trigger_fails_naming_the_field() -> None:
    text = """
zap: on-failures
trigger: {app: builtin, event: zap_failed}
steps:
  - {id: note, action: builtin.format_text, input: {value: "{{ trigger.error }}", transform: trim}}
"""
    plan = plan_of(load_zap_text(text))
    event = Event(app="builtin", trigger="zap_failed", payload={"zap": 3})
    with pytest.raises(StepInputError, match=r"does not fit trigger builtin.zap_failed: .*zap"):
        ZapRun(plan, event)


def test_an_event_travels_as_a_flow_run_parameter_and_back_unchanged() -> None:
    event = Event(
        id="e-1",
        app="cinnox",
        trigger="missed_enquiry",
        payload={"enquiryID": "Q1", "nested": {"a": [1, 2]}},
        connection="main",
        received_at=datetime(2026, 12, 4, 9, 30, tzinfo=UTC),
    )
    back = Event.from_json(event.to_json())
    assert back == event
    made_up = Event.from_json({"app": "builtin", "trigger": "catch_hook", "payload": {}})
    assert len(made_up.id) == 32 and made_up.received_at.tzinfo is not None
