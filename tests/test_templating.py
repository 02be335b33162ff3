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


HOSTILE = [
    (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "more than 1,000,000 loop iterations and calls",
    ),
    (
        "{% for i in trigger.tags %}{% for j in range(100000) %}{% for k in range(100000) %}"
        "{% endfor %}{% endfor %}{% endfor %}",
        "loop iterations",
    ),
    (
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
        "{% endfor %}{{ ns.s }}",
        "namespace value 's' would be 1,048,576 long",
    ),
    ("{{ 'x' * 100000 * 2000 }}", "a repeated sequence would be 200,000,000 long"),
    ("{{ [1] * 10 * 1000000 }}", "a repeated sequence would be 10,000,000 long"),
    ("{{ '%0100000000d' % 1 }}", "a format width would be 100,000,000 long"),
    ("{{ '{:0100000000}'.format(1) }}", "a format width would be 100,000,000 long"),
    ("{{ '%0100000000d' | format(1) }}", "a format width"),
    ("{{ 'x' | center(100000000) }}", "a centered string would be 100,000,000 long"),
    ("{{ 'a\nb' | indent(100000000) }}", "an indented string"),
    ("{{ range(100000) | join('x' * 20) }}", "a joined string"),
    ("{{ ('x' * 500000) | replace('x', 'yyyy') }}", "a replaced string would be 2,000,000 long"),
    ("{{ lipsum(100000) }}", "lorem ipsum text"),
    ("{{ ((2 ** 1000) ** 1000) ** 1000 }}", "a power would be a 1,001,000-bit number"),
    ("{{ ('x' * 900000) + ('y' * 900000) }}", "a joined sequence would be 1,800,000 long"),
]


@pytest.mark.parametrize(("template", "limit"), HOSTILE)
def test_a_template_over_budget_fails_quickly_naming_the_limit(template, limit, figures):
    import time

    started = time.monotonic()
    with pytest.raises(TemplateError) as info:
        render_value(template, CONTEXT, "text")
    took = time.monotonic() - started
    assert took < 1.5  # the render budget is 0.5 s
    section = "hostile templates"
    figures.count(section, "tried")
    figures.count(section, "refused within budget")
    slowest = figures.sections[section].get("slowest refusal (s)", 0.0)
    figures.record(section, "slowest refusal (s)", max(slowest, round(took, 3)))
    assert "text: refused by the template sandbox: " in str(info.value)
    assert limit in str(info.value)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{% for t in trigger.tags if t != 'hk' %}{{ t }};{% endfor %}", "vip;"),
        ("{% for t in trigger.tags %}{{ loop.index }}/{{ loop.length }} {% endfor %}", "1/2 2/2 "),
        ("{% for k, v in {'a': 1}.items() %}{{ k }}={{ v }}{% endfor %}", "a=1"),
        ("{% for x in [[1, 2], [3]] %}{% for y in x %}{{ y }}{% endfor %}{% endfor %}", "123"),
        (
            "{% set ns = namespace(n=0) %}{% for t in trigger.tags %}{% set ns.n = ns.n + 1 %}"
            "{% endfor %}{{ ns.n }}",
            2,
        ),
        ("{{ '{:>6.1f}'.format(trigger.total) }}", "  42.5"),
        ("{{ '%05.1f' % trigger.total }}", "042.5"),
        ("{{ trigger.tags | join(', ') | upper }}", "VIP, HK"),
        ("{{ 'ab' * 3 + 'c' }}", "abababc"),
        ("{{ 2 ** 64 }}", 2**64),
        ("{{ range(1000) | sum }}", 499500),
    ],
)
def test_ordinary_templates_are_well_within_budget(template, expected):
    assert render_value(template, CONTEXT) == expected


RUNAWAY = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


async def test_a_runaway_template_renders_off_the_event_loop_and_holds_nobody_back():
    """A zap run renders on the event loop only briefly: a template still going after
    INLINE_SECONDS is finished in a render process, so other zaps' work goes on meanwhile."""
    import asyncio
    import time

    from flows.rendering import render
    from flows.template_budget import INLINE_SECONDS

    gaps: list[float] = []

    async def other_zaps() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.002)
            moment = time.monotonic()
            gaps.append(moment - last)
            last = moment

    ticker = asyncio.create_task(other_zaps())
    await asyncio.sleep(0.01)
    started = time.monotonic()
    runaway = [render(RUNAWAY, CONTEXT, f"steps.s{i}.input.text") for i in range(3)]
    results = await asyncio.gather(*runaway, return_exceptions=True)
    took = time.monotonic() - started
    ticker.cancel()

    assert all(isinstance(r, TemplateError) for r in results), results
    assert "steps.s2.input.text: refused by the template sandbox" in str(results[2])
    assert took < 3
    # the loop was never held for more than the inline slice (plus scheduling slack)
    assert max(gaps) < INLINE_SECONDS + 0.1, max(gaps)
    assert len(gaps) > took / 0.05  # it kept turning throughout
    assert await render({"a": "{{ trigger.total * 2 }}"}, CONTEXT) == {"a": 85.0}


async def test_a_step_timeout_ends_its_render_too():
    import time

    from flows.rendering import render
    from flows.template_budget import step_deadline

    # A deadline short enough that no machine does the template's 1,000,000 iterations first
    # (at 0.15 s a fast moment of this machine did: the sandbox's count refused it instead).
    started = time.monotonic()
    with step_deadline(0.06), pytest.raises(TemplateError) as info:
        await render({"text": RUNAWAY}, CONTEXT, "steps.s.input")
    assert time.monotonic() - started < 0.4
    assert str(info.value) == (
        "steps.s.input.text: refused by the template sandbox: "
        "the template ran past the step's timeout (0.06 s)"
    )


def test_all_templates_of_a_step_share_one_budget():
    import time

    from flows.template_budget import RENDER_SECONDS

    # 300,000 iterations: under the limit alone, ten times over it together
    slow = "{% for i in range(300) %}{% for j in range(1000) %}{% endfor %}{% endfor %}"
    started = time.monotonic()
    with pytest.raises(TemplateError, match="loop iterations and calls"):
        render_value({f"f{i}": slow for i in range(10)}, CONTEXT, "steps.s.input")
    assert time.monotonic() - started < RENDER_SECONDS * 3
