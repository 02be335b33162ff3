"""The built-in Formatter actions: format_text, format_number, format_date."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from pydantic import ValidationError

from connectors import ActionContext, PermanentError, registry

CTX = ActionContext(zap_id="t", step_id="s", run_id="r", event_id="e")


async def run(action_name: str, **input: Any) -> Any:
    """Validate the input and run the action the way the engine does; return its output."""
    action = registry.action(f"builtin.{action_name}")
    result = await action.run(action.input_model.model_validate(input), CTX)
    return result.output


def errors(action_name: str, **input: Any) -> list[tuple[tuple[Any, ...], str]]:
    """The (location, message) of every validation error the input raises."""
    action = registry.action(f"builtin.{action_name}")
    with pytest.raises(ValidationError) as caught:
        action.input_model.model_validate(input)
    return [(err["loc"], err["msg"]) for err in caught.value.errors()]


def test_registered_as_pure_actions_with_descriptions() -> None:
    for name in ("format_text", "format_number", "format_date"):
        action = registry.action(f"builtin.{name}")
        assert action.side_effects is False
        assert action.description
        schema = action.input_model.model_json_schema()
        assert schema["discriminator"]["propertyName"] == "transform"
        for variant in schema["$defs"].values():
            for field, spec in variant["properties"].items():
                assert spec.get("description"), f"{name}: {variant['title']}.{field}"


# --------------------------------------------------------------------------- format_text


@pytest.mark.parametrize(
    ("input", "expected"),
    [
        ({"transform": "uppercase", "value": "Chan Tai Man"}, "CHAN TAI MAN"),
        ({"transform": "lowercase", "value": "Chan Tai Man"}, "chan tai man"),
        ({"transform": "titlecase", "value": "chan tai man"}, "Chan Tai Man"),
        ({"transform": "titlecase", "value": "CHAN TAI-MAN"}, "Chan Tai-Man"),
        ({"transform": "capitalize", "value": "  hello World"}, "  Hello World"),
        ({"transform": "trim", "value": "\t hello \n"}, "hello"),
        ({"transform": "length", "value": "陳大文 "}, 4),
        ({"transform": "word_count", "value": " one two\nthree "}, 3),
        ({"transform": "replace", "value": "a-b-c", "find": "-", "replace_with": "/"}, "a/b/c"),
        ({"transform": "replace", "value": "a-b-c", "find": "-"}, "abc"),
        ({"transform": "truncate", "value": "Hello world", "max_length": 5}, "Hello"),
        (
            {
                "transform": "truncate",
                "value": "Hello world",
                "max_length": 9,
                "append_ellipsis": True,
            },
            "Hello...",
        ),
        ({"transform": "truncate", "value": "Hi", "max_length": 5, "append_ellipsis": True}, "Hi"),
        ({"transform": "split", "value": "a  b\tc"}, ["a", "b", "c"]),
        ({"transform": "split", "value": "a,b,c", "separator": ",", "segment": "first"}, "a"),
        ({"transform": "split", "value": "a,b,c", "separator": ",", "segment": "last"}, "c"),
        ({"transform": "split", "value": "a,b,c", "separator": ",", "segment": 1}, "b"),
        ({"transform": "split", "value": "a,b,c", "separator": ",", "segment": 3}, None),
        ({"transform": "default_value", "value": "  ", "default": "n/a"}, "n/a"),
        ({"transform": "default_value", "value": None, "default": 0}, 0),
        ({"transform": "default_value", "value": 42, "default": 0}, 42),
        (
            {"transform": "extract_email", "value": "Write to tai.man+hk@example.com.hk."},
            "tai.man+hk@example.com.hk",
        ),
        ({"transform": "extract_email", "value": "no address here"}, None),
        (
            {
                "transform": "extract_phone_number",
                "value": "Call 9123 4567 today",
                "default_region": "hk",
            },
            "+85291234567",
        ),
        ({"transform": "extract_phone_number", "value": "Call 9123 4567 today"}, None),
        (
            {"transform": "extract_url", "value": "See (https://example.com/a?b=1)."},
            "https://example.com/a?b=1",
        ),
        ({"transform": "extract_number", "value": "Total: HK$1,234.50 due"}, 1234.5),
        ({"transform": "extract_number", "value": "Balance -20 left"}, -20),
        ({"transform": "extract_number", "value": "none"}, None),
        (
            {"transform": "extract_pattern", "value": "Order #1001 paid", "pattern": r"#(\d+)"},
            "1001",
        ),
        (
            {
                "transform": "extract_pattern",
                "value": "Order #1001 PAID",
                "pattern": r"#(?P<order>\d+) (?P<state>paid)",
                "ignore_case": True,
            },
            {"order": "1001", "state": "PAID"},
        ),
        ({"transform": "extract_pattern", "value": "Order", "pattern": r"\d+"}, None),
        ({"transform": "url_encode", "value": "a b&c/d"}, "a%20b%26c%2Fd"),
        ({"transform": "url_encode", "value": "a b", "spaces_as_plus": True}, "a+b"),
        ({"transform": "url_decode", "value": "a%20b+c"}, "a b+c"),
        ({"transform": "url_decode", "value": "a%20b+c", "spaces_as_plus": True}, "a b c"),
        (
            {
                "transform": "strip_html",
                "value": "<p>Hi &amp; <b>bye</b></p><script>x()</script><p>two<br>lines</p>",
            },
            "Hi & bye\ntwo\nlines",
        ),
    ],
    ids=lambda v: v["transform"] if isinstance(v, dict) and "transform" in v else "",
)
async def test_format_text(input: dict[str, Any], expected: Any) -> None:
    assert await run("format_text", **input) == expected


@pytest.mark.parametrize(
    ("value", "expected"), [(None, ""), (1234, "1234"), (True, "true"), ([1, "a"], '[1, "a"]')]
)
async def test_format_text_turns_any_value_into_text(value: Any, expected: str) -> None:
    assert await run("format_text", transform="trim", value=value) == expected


def test_format_text_errors_name_the_field() -> None:
    assert errors("format_text", transform="replace", value="x") == [(("find",), "Field required")]
    assert errors("format_text", transform="truncate", value="x", max_length=0)[0][0] == (
        "max_length",
    )
    [(loc, message)] = errors("format_text", transform="extract_pattern", value="x", pattern="(a")
    assert loc == ("pattern",)
    assert "not a valid regular expression" in message


def test_format_text_unknown_transform_lists_the_allowed_ones() -> None:
    [(loc, message)] = errors("format_text", transform="upper", value="x")
    assert loc == ("transform",)
    assert "did you mean 'uppercase'" in message
    assert "titlecase" in message and "extract_pattern" in message
    [(loc, message)] = errors("format_text", value="x")
    assert loc == ("transform",)
    assert "missing" in message and "uppercase" in message


def test_format_text_unknown_field_lists_the_transforms_fields() -> None:
    [(loc, message)] = errors(
        "format_text", transform="replace", value="x", find="a", replace_by="b"
    )
    assert loc == ("replace_by",)
    assert "did you mean 'replace_with'" in message
    assert "replace takes: transform, value, find, replace_with" in message


def test_format_text_bad_region_is_a_validation_error() -> None:
    [(loc, message)] = errors(
        "format_text", transform="extract_phone_number", value="x", default_region="XX"
    )
    assert loc == ("default_region",)
    assert "unknown region 'XX'" in message


# --------------------------------------------------------------------------- format_number


@pytest.mark.parametrize(
    ("input", "expected"),
    [
        ({"transform": "format_number", "value": "1234.5", "decimal_places": 2}, "1,234.50"),
        ({"transform": "format_number", "value": 1234567.891}, "1,234,567.891"),
        (
            {
                "transform": "format_number",
                "value": 1234567.891,
                "decimal_places": 2,
                "thousands_separator": ".",
                "decimal_separator": ",",
            },
            "1.234.567,89",
        ),
        ({"transform": "format_number", "value": 1234, "thousands_separator": "none"}, "1234"),
        (
            {"transform": "format_number", "value": 1234.5, "thousands_separator": "."},
            "1.234,5",
        ),
        (
            {"transform": "format_number", "value": "1.234,5", "value_decimal_separator": ","},
            "1,234.5",
        ),
        ({"transform": "format_number", "value": "-0.001", "decimal_places": 2}, "0.00"),
        ({"transform": "format_currency", "value": "1,234.5", "currency": "HKD"}, "HK$1,234.50"),
        ({"transform": "format_currency", "value": -5, "currency": "usd"}, "-$5.00"),
        (
            {"transform": "format_currency", "value": 1234.5, "currency": "HKD", "display": "code"},
            "1,234.50 HKD",
        ),
        ({"transform": "format_currency", "value": 1234.5, "currency": "CHF"}, "1,234.50 CHF"),
        ({"transform": "format_currency", "value": 1234.5, "currency": "JPY"}, "¥1,235"),
        ({"transform": "round", "value": "2.675", "decimal_places": 2}, 2.68),
        ({"transform": "round", "value": 2.5}, 3),
        ({"transform": "round", "value": 2.5, "mode": "half_even"}, 2),
        ({"transform": "round", "value": -2.1, "mode": "up"}, -3),
        ({"transform": "round", "value": -2.9, "mode": "down"}, -2),
        ({"transform": "round", "value": 1250, "decimal_places": -2}, 1300),
        (
            {"transform": "math", "operation": "add", "value": "1,234.5", "operands": [1, "0.5"]},
            1236,
        ),
        ({"transform": "math", "operation": "subtract", "value": 10, "operands": [3, 2.5]}, 4.5),
        ({"transform": "math", "operation": "multiply", "value": "HK$12.5", "operands": [4]}, 50),
        ({"transform": "math", "operation": "divide", "value": 10, "operands": [4]}, 2.5),
        ({"transform": "math", "operation": "sum", "value": [1, 2, 3.5]}, 6.5),
        ({"transform": "math", "operation": "average", "value": [1, 2], "operands": [6]}, 3),
        ({"transform": "math", "operation": "min", "value": 5, "operands": [-1, 3]}, -1),
        ({"transform": "math", "operation": "max", "value": 5, "operands": [-1, 3]}, 5),
        (
            {"transform": "format_phone_number", "value": "91234567", "default_region": "HK"},
            "+85291234567",
        ),
        (
            {
                "transform": "format_phone_number",
                "value": "+852 9123 4567",
                "to_format": "international",
            },
            "+852 9123 4567",
        ),
        (
            {
                "transform": "format_phone_number",
                "value": 91234567,
                "default_region": "HK",
                "to_format": "national",
            },
            "9123 4567",
        ),
        (
            {"transform": "format_phone_number", "value": "+85291234567", "to_format": "rfc3966"},
            "tel:+852-9123-4567",
        ),
    ],
    ids=lambda v: v["transform"] if isinstance(v, dict) and "transform" in v else "",
)
async def test_format_number(input: dict[str, Any], expected: Any) -> None:
    result = await run("format_number", **input)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("input", "message"),
    [
        (
            {"transform": "math", "operation": "divide", "value": 1, "operands": [2, "0"]},
            "cannot divide by zero: `operands[1]`",
        ),
        ({"transform": "format_number", "value": "12abc"}, "`value` '12abc' is not a number"),
        ({"transform": "round", "value": None}, "`value` is empty"),
        ({"transform": "math", "operation": "sum", "value": [1, "x"]}, "`value[1]` 'x'"),
        (
            {"transform": "format_phone_number", "value": "1234", "default_region": "HK"},
            "'1234' is not a valid phone number",
        ),
        ({"transform": "format_phone_number", "value": "91234567"}, "give default_region"),
        (
            {"transform": "format_phone_number", "value": "hello", "default_region": "HK"},
            "'hello' is not a phone number",
        ),
    ],
)
async def test_format_number_fails_for_good_on_bad_data(
    input: dict[str, Any], message: str
) -> None:
    with pytest.raises(PermanentError, match=message.replace("[", r"\[").replace("$", r"\$")):
        await run("format_number", **input)


def test_format_number_errors_name_the_field() -> None:
    [(loc, message)] = errors("format_number", transform="math", operation="divide", value=1)
    assert loc == ("operands",)
    assert "divide needs at least one operand" in message
    [(loc, _)] = errors("format_number", transform="format_currency", value=1, currency="HK$")
    assert loc == ("currency",)
    [(loc, _)] = errors(
        "format_number",
        transform="format_number",
        value=1,
        thousands_separator=".",
        decimal_separator=".",
    )
    assert loc == ("decimal_separator",)


# --------------------------------------------------------------------------- format_date

HK = {"from_timezone": "Asia/Hong_Kong"}


@pytest.mark.parametrize(
    ("input", "expected"),
    [
        (
            {"value": "25/11/2026 14:30", "from_format": "%d/%m/%Y %H:%M", **HK},
            "2026-11-25T14:30:00+08:00",
        ),
        ({"value": "25/11/2026", "from_format": "dd/mm/yyyy", "to_format": "date"}, "2026-11-25"),
        (
            {
                "value": "2026-11-25T06:30:00Z",
                "to_timezone": "Asia/Hong_Kong",
                "to_format": "%d %b %Y %H:%M",
            },
            "25 Nov 2026 14:30",
        ),
        ({"value": 1795588200, **HK}, "2026-11-25T14:30:00+08:00"),
        ({"value": "1795588200000", "to_format": "iso"}, "2026-11-25T06:30:00+00:00"),
        ({"value": "2026-11-25T14:30:00+08:00", "to_format": "unix"}, 1795588200),
        ({"value": "2026-11-25T14:30:00+08:00", "to_format": "unix_ms"}, 1795588200000),
        ({"value": "20261125", "to_format": "dd/mm/yyyy"}, "25/11/2026"),
        ({"value": date(2026, 11, 25), "to_format": "date"}, "2026-11-25"),
        (
            {"value": "25 Nov 2026 2:30pm", "to_format": "rfc2822", **HK},
            "Wed, 25 Nov 2026 14:30:00 +0800",
        ),
        ({"value": "01/02/2026", "to_format": "date"}, "2026-01-02"),
        ({"value": "01/02/2026", "to_format": "date", "day_first": True}, "2026-02-01"),
    ],
)
async def test_format_date(input: dict[str, Any], expected: Any) -> None:
    assert await run("format_date", transform="format", **input) == expected


@pytest.mark.parametrize(
    ("input", "expected"),
    [
        ({"value": "2026-11-25", "unit": "days", "amount": 3, "to_format": "date"}, "2026-11-28"),
        ({"value": "2026-01-31", "unit": "months", "amount": 1, "to_format": "date"}, "2026-02-28"),
        (
            {"value": "2026-11-25T14:30:00+08:00", "unit": "hours", "amount": -1.5},
            "2026-11-25T13:00:00+08:00",
        ),
        # Across a daylight-saving change: hours are elapsed time, days are calendar days.
        (
            {
                "value": "2026-03-08T01:30:00",
                "from_timezone": "America/New_York",
                "unit": "hours",
                "amount": 1,
            },
            "2026-03-08T03:30:00-04:00",
        ),
        (
            {
                "value": "2026-03-07T12:00:00",
                "from_timezone": "America/New_York",
                "unit": "days",
                "amount": 1,
            },
            "2026-03-08T12:00:00-04:00",
        ),
    ],
)
async def test_format_date_add(input: dict[str, Any], expected: str) -> None:
    assert await run("format_date", transform="add", **input) == expected


@pytest.mark.parametrize(
    ("value", "other", "expected"),
    [
        (
            "2026-11-25T14:30:00+08:00",
            "2026-11-25T07:00:00Z",
            {"earlier": "value", "difference_seconds": 1800},
        ),
        ("2026-11-26", "2026-11-25T12:00:00", {"earlier": "other", "difference_seconds": -43200}),
        ("2026-11-25T14:30:00+08:00", 1795588200, {"earlier": "same", "difference_seconds": 0}),
    ],
)
async def test_format_date_compare(value: Any, other: Any, expected: dict[str, Any]) -> None:
    assert await run("format_date", transform="compare", value=value, other=other) == expected


@pytest.mark.parametrize(
    ("input", "message"),
    [
        ({"transform": "format", "value": "not a date"}, "`value` 'not a date' is not a date"),
        (
            {"transform": "format", "value": "25-11-2026", "from_format": "dd/mm/yyyy"},
            "is not a date written as 'dd/mm/yyyy'",
        ),
        ({"transform": "format", "value": ""}, "`value` is empty"),
        ({"transform": "format", "value": None}, "`value` is empty"),
        ({"transform": "compare", "value": "2026-11-25", "other": "soon"}, "`other` 'soon'"),
        (
            {"transform": "add", "value": "9999-12-31", "unit": "days", "amount": 1},
            "leaves the supported years",
        ),
    ],
)
async def test_format_date_fails_for_good_on_bad_data(input: dict[str, Any], message: str) -> None:
    with pytest.raises(PermanentError, match=message):
        await run("format_date", **input)


def test_format_date_errors_name_the_field() -> None:
    [(loc, message)] = errors(
        "format_date", transform="format", value="x", to_timezone="Asia/HongKong"
    )
    assert loc == ("to_timezone",)
    assert "did you mean 'Asia/Hong_Kong'" in message
    [(loc, message)] = errors("format_date", transform="format", value="x", from_timezone="HKT")
    assert loc == ("from_timezone",)
    assert "IANA name such as 'Asia/Hong_Kong'" in message
    [(loc, message)] = errors("format_date", transform="format", value="x", to_format="YYYY")
    assert loc == ("to_format",)
    assert "strftime" in message
    [(loc, _)] = errors("format_date", transform="add", value="x", unit="months", amount=1.5)
    assert loc == ("amount",)
    [(loc, message)] = errors(
        "format_date", transform="compare", value="x", other="y", to_format="iso"
    )
    assert loc == ("to_format",)
    assert "compare takes:" in message
