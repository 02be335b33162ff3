"""A user's zap files with mistakes: each mistake named at file:line:column with what is allowed."""

from __future__ import annotations

import textwrap

import pytest

from flows.errors import ZapValidationError
from flows.loader import load_all, load_zap_file

GOOD = """\
zap: order-router
trigger:
  app: builtin
  event: catch_hook
filter:
  - "trigger.total > 10"
steps:
  - id: team
    action: builtin.lookup
    input:
      key: "{{ trigger.customer }}"
      table: {"Chan Tai Man": sales}
      fallback: support
  - id: route
    paths:
      - name: sales
        when: "steps.team.value == 'sales'"
        steps:
          - id: note
            action: builtin.lookup
            input: {key: x, table: {x: "{{ steps.team.value | upper }}"}}
"""


def problems_of(write_zap, text: str) -> list[str]:
    path = write_zap(textwrap.dedent(text))
    with pytest.raises(ZapValidationError) as info:
        load_zap_file(path)
    return [str(p).replace(str(path), "zap.yaml") for p in info.value.problems]


def test_a_good_zap_loads(write_zap):
    loaded = load_zap_file(write_zap(GOOD))
    assert loaded.zap.zap == "order-router"
    assert [s.step.id for s in loaded.zap.walk()] == ["team", "route", "note"]


def test_yaml_syntax_error_names_line_and_column(write_zap):
    problems = problems_of(write_zap, "zap: x\ntrigger: {app: builtin\nsteps: []\n")
    assert len(problems) == 1
    assert problems[0].startswith("zap.yaml:3:")
    assert "YAML syntax error" in problems[0]


def test_duplicate_yaml_key_is_refused(write_zap):
    problems = problems_of(
        write_zap, GOOD.replace("  event: catch_hook\n", "  event: catch_hook\n  app: x\n")
    )
    assert problems == ["zap.yaml:5:3: duplicate key 'app'"]


def test_unknown_action_suggests_the_close_one(write_zap):
    problems = problems_of(
        write_zap,
        GOOD.replace(
            "action: builtin.lookup\n    input:\n      key",
            "action: builtin.lokup\n    input:\n      key",
        ),
    )
    (problem,) = problems
    assert problem.startswith(
        "zap.yaml:9:13: steps[0].action: app 'builtin' has no action 'lokup' "
        "(did you mean 'lookup'?); its actions: delay, "
    )
    assert problem.endswith(", lookup")


def test_unknown_trigger_and_unknown_app(write_zap):
    assert problems_of(write_zap, GOOD.replace("event: catch_hook", "event: catchhook")) == [
        "zap.yaml:4:10: trigger.event: app 'builtin' has no trigger 'catchhook' "
        "(did you mean 'catch_hook'?); its triggers: catch_hook, schedule, zap_failed"
    ]
    (problem,) = problems_of(write_zap, GOOD.replace("app: builtin", "app: buildin"))
    assert problem.startswith(
        "zap.yaml:3:8: trigger.app: unknown app 'buildin' (did you mean 'builtin'?)"
    )


def test_wrong_field_type_names_the_field(write_zap):
    problems = problems_of(
        write_zap,
        GOOD.replace(
            "      fallback: support", "      fallback: support\n      case_sensitive: sometimes"
        ),
    )
    assert problems == [
        "zap.yaml:14:23: steps[0].input.case_sensitive: Input should be a valid boolean, "
        "unable to interpret input (got 'sometimes')"
    ]


def test_unknown_input_field_lists_allowed_ones(write_zap):
    problems = problems_of(
        write_zap, GOOD.replace("      fallback: support", "      fallbak: support")
    )
    assert problems == [
        "zap.yaml:13:7: steps[0].input.fallbak: unknown field 'fallbak' "
        "(did you mean 'fallback'?); allowed: key, table, fallback, case_sensitive"
    ]


def test_missing_required_fields(write_zap):
    problems = problems_of(write_zap, "zap: x\nsteps:\n  - id: a\n    input: {}\n")
    assert "zap.yaml:1:1: trigger: required field 'trigger' is missing" in problems
    assert "zap.yaml:3:5: steps[0].action: required field 'action' is missing" in problems


def test_reference_to_missing_or_later_step(write_zap):
    text = GOOD.replace(
        'key: "{{ trigger.customer }}"', 'key: "{{ steps.note.value }} {{ steps.tem.value }}"'
    )
    problems = problems_of(write_zap, text)
    assert problems == [
        "zap.yaml:11:12: steps[0].input.key: step 'note' (steps[1].paths[0].steps[0]) is inside "
        "a path branch that may not run before this",
        "zap.yaml:11:12: steps[0].input.key: there is no step 'tem' (did you mean 'team'?); "
        "steps this one can read: none yet",
    ]
    later = GOOD.replace("when: \"steps.team.value == 'sales'\"", 'when: "steps.route.ran"')
    assert problems_of(write_zap, later) == [
        "zap.yaml:17:15: steps[1].paths[0].when: step 'route' (steps[1]) runs later; "
        "a step can read only steps before it"
    ]


@pytest.mark.parametrize(
    "expression",
    ["''.__class__.__mro__", "cycler.__init__.__globals__", "trigger|attr('__class__')"],
)
def test_sandbox_escape_is_refused_at_load_time(write_zap, expression):
    problems = problems_of(
        write_zap, GOOD.replace("{{ trigger.customer }}", "{{ " + expression + " }}")
    )
    assert problems and all("reaches for Python internals" in p for p in problems)
    assert problems[0].startswith("zap.yaml:11:12: steps[0].input.key:")


def test_template_syntax_error(write_zap):
    problems = problems_of(write_zap, GOOD.replace("{{ trigger.customer }}", "{{ trigger.customer"))
    assert len(problems) == 1 and "template syntax error" in problems[0]


def test_all_problems_of_all_files_in_one_run(tmp_path):
    (tmp_path / "one.yaml").write_text(GOOD.replace("zap: order-router", "zap: Order Router"))
    (tmp_path / "two.yml").write_text(
        GOOD.replace(
            "action: builtin.lookup\n    input:\n      key",
            "action: nope.lookup\n    input:\n      key",
        )
    )
    (tmp_path / "three.yaml").write_text(GOOD.replace("zap: order-router", "zap: other"))
    loaded, problems = load_all([tmp_path])
    assert [z.zap.zap for z in loaded] == ["other"]
    assert [p.file.rsplit("/", 1)[-1] for p in problems] == ["one.yaml", "two.yml"]
    assert "zap: must be lowercase" in str(problems[0])
    assert "unknown app 'nope'" in str(problems[1])


def test_the_readme_example_zap_is_valid(tmp_path):
    from conftest import HERE

    readme = (HERE.parent / "README.md").read_text(encoding="utf-8")
    example = readme.split("## A zap", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "example.yaml").write_text(example)
    loaded = load_zap_file(tmp_path / "example.yaml")
    assert loaded.zap.zap == "order-follow-up"


OUTPUT_FIELDS = """\
zap: tell-twice
trigger: {app: cinnox, event: missed_enquiry, connection: sandbox}
steps:
  - id: detail
    action: cinnox.get_enquiry_detail
    input: {display_case_number: "{{ trigger.displayCaseNumber }}"}
  - id: im
    action: cinnox.send_im_to_staff
    input:
      staff_id: "{{ steps.detail.handledTarget }}"
      text: "{{ steps.detail.visitorname }} from {{ steps.detail.locationDetail.regioncode }}"
  - id: again
    action: cinnox.send_im_to_room
    when: "steps.im.messageID"
    input:
      room_id: "{{ steps.detail['roomID'] }}"
      text: "{{ steps.im.text | upper }} {{ steps.detail.someNewKey }} {{ steps.im.text.x }}"
"""


def test_fields_read_from_earlier_steps_are_checked_against_their_output(write_zap):
    problems = problems_of(write_zap, OUTPUT_FIELDS)
    assert len(problems) == 3, problems
    when, text, region = sorted(problems, key=lambda p: ("when" not in p, "region" in p))
    assert when.startswith("zap.yaml:14:")
    assert "steps[2].when: steps.im.messageID: step 'im' (cinnox.send_im_to_staff) has no " in when
    assert "output field 'messageID' (did you mean 'message_id'?)" in when
    assert "its output fields: staff_id, text, message_id" in when
    assert "'visitorname' (did you mean 'visitorName'?)" in text and "steps[1].input.text" in text
    # nested models are followed; an app's reply open to new keys accepts `someNewKey`
    assert "steps.detail.locationDetail.regioncode" in region
    assert "did you mean 'regionCode'?" in region
    assert not any("someNewKey" in p or "text.x" in p for p in problems)


def test_every_example_zap_reads_only_fields_its_steps_output():
    from conftest import EXAMPLE_ZAPS

    loaded, problems = load_all([EXAMPLE_ZAPS])
    assert problems == [] and len(loaded) == 5


def test_templates_provably_over_budget_are_refused_when_loaded(write_zap):
    problems = problems_of(
        write_zap,
        """\
zap: bombs
trigger: {app: builtin, event: catch_hook}
steps:
  - id: a
    action: builtin.format_text
    input:
      transform: uppercase
      value: "{{ 'x' * 10**9 }}{{ 10 ** 100000 }}{{ 'x' * 100000 * 2000 }}{{ 'ab' * 3 }}"
  - id: b
    action: builtin.format_text
    input: {transform: uppercase, value: "{{ 'x' | center(100000000) }}"}
""",
    )
    assert len(problems) == 4, problems
    assert all("template is over its budget: " in p for p in problems)
    text = "\n".join(problems)
    assert "a repeated sequence would be 1,000,000,000 long" in text
    assert "exponent 100000 is too large" in text
    assert "a repeated sequence would be 200,000,000 long" in text
    assert "steps[1].input.value: template is over its budget: a centered string" in text
