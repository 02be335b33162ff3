"""Templates as zap authors write them: native values, strict names, and a sandbox."""

from __future__ import annotations

import pytest

from flows.errors import TemplateError
from flows.templating import evaluate_condition, render_value

CONTEXT = {
    "trigger": {"total": 42.5, "phone": "+85291234567", "tags": ["vip", "hk"], "name": "Chan"},
    "steps": {"team": {"value": "sales"}, "skipped": None},
    "zap": {"id": "z"},
    "run": {"id": "r1"},
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ trigger.total }}", 42.5),
        ("{{ trigger.tags }}", ["vip", "hk"]),
        ("{{ trigger.phone }}", "+85291234567"),  # stays text: never parsed as a number
        ("{{ trigger.total * 2 }}", 85.0),
        ("Hi {{ trigger.name }}", "Hi Chan"),
        ("{{ trigger.total }} HKD", "42.5 HKD"),
        ("+852{{ 91234567 }}", "+85291234567"),
        ("{% if trigger.total > 40 %}big{% else %}small{% endif %}", "big"),
        ("no template here", "no template here"),
    ],
)
def test_values_keep_their_type(template, expected):
    assert render_value(template, CONTEXT) == expected


def test_nested_inputs_are_rendered():
    value = {"to": ["{{ trigger.phone }}"], "text": "Team {{ steps.team.value }}", "n": 3}
    assert render_value(value, CONTEXT) == {"to": ["+85291234567"], "text": "Team sales", "n": 3}


def test_a_missing_field_says_what_is_there():
    with pytest.raises(TemplateError) as info:
        render_value({"text": "{{ trigger.nmae }}"}, CONTEXT, "steps.sms.input")
    assert str(info.value) == (
        "steps.sms.input.text: 'nmae' is not there; available: total, phone, tags, name "
        "(in '{{ trigger.nmae }}')"
    )


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ trigger|attr('__class__') }}",
        "{{ 'x' * 10000000 }}",
        "{{ 10 ** 100000 }}",
    ],
)
def test_the_sandbox_refuses_escapes_and_bombs(template):
    with pytest.raises(TemplateError, match="refused by the template sandbox"):
        render_value(template, CONTEXT, "f")


def test_conditions_bare_or_braced():
    assert evaluate_condition("trigger.total > 40", CONTEXT, "filter[0]") is True
    assert evaluate_condition("{{ 'vip' in trigger.tags }}", CONTEXT, "filter[0]") is True
    assert evaluate_condition("steps.skipped", CONTEXT, "when") is False
