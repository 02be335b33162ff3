"""Formatter: text, number and date/time conversions, like Zapier's Formatter.

Three actions, each told what to do by its ``transform`` field. The other fields depend on the
transform, and a zap file is checked against exactly that transform's fields::

    - id: name
      action: builtin.format_text
      input: {transform: titlecase, value: "{{ trigger.name }}"}

``format_text`` works on text (any value is turned into text first, nothing into ""),
``format_number`` on numbers, money and phone numbers, ``format_date`` on dates and times.
Results keep their natural type: lengths, counts and arithmetic give numbers, formatting gives
text. Extractions give null when nothing is found. Data that cannot be converted (a date that
is no date, an invalid phone number, a division by zero) fails the step with a PermanentError,
since a retry would not help.
"""

from __future__ import annotations

import functools
import json
import math
import re
import warnings
from datetime import UTC, date, datetime, time, timedelta
from decimal import (
    ROUND_CEILING,
    ROUND_DOWN,
    ROUND_FLOOR,
    ROUND_HALF_EVEN,
    ROUND_HALF_UP,
    ROUND_UP,
    Decimal,
    DecimalException,
    InvalidOperation,
)
from email.utils import format_datetime, parsedate_to_datetime
from html.parser import HTMLParser
from typing import Annotated, Any, Literal, get_args
from urllib.parse import quote, quote_plus, unquote, unquote_plus
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import phonenumbers
from dateutil import parser as dateparser
from dateutil.relativedelta import relativedelta
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    RootModel,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_core.core_schema import ErrorType

from connectors._contract import ActionContext
from connectors._errors import PermanentError
from connectors.builtin._app import app
from connectors.registry import suggest

# --------------------------------------------------------------------------- input plumbing

_TRANSFORM_HELP = "Which conversion to apply"
_KNOWN_ERRORS = frozenset(get_args(ErrorType))


class _Transform(BaseModel):
    model_config = ConfigDict(extra="forbid")

    transform: str = Field(description=_TRANSFORM_HELP)
    value: Any = Field(description="The value to convert")


class _ByTransform(RootModel[Any]):
    """An input whose fields depend on its ``transform``.

    Pydantic locates errors of a tagged union under the tag (``replace.find``); they are moved
    back to where the user wrote them (``find``), and an unknown transform or field lists what
    is allowed.
    """

    @model_validator(mode="wrap")
    @classmethod
    def _locate_errors(cls, data: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
        try:
            return handler(data)
        except ValidationError as exc:
            raise _relocated(cls, data, exc) from None

    @classmethod
    def variants(cls) -> dict[str, type[_Transform]]:
        """Each transform name and the model of its fields, in declaration order."""
        return _variants(cls)


@functools.cache
def _variants(model: type[RootModel[Any]]) -> dict[str, type[_Transform]]:
    found: dict[str, type[_Transform]] = {}
    for variant in get_args(model.model_fields["root"].annotation):
        for tag in get_args(variant.model_fields["transform"].annotation):
            found[tag] = variant
    return found


def _relocated(model: type[_ByTransform], data: Any, exc: ValidationError) -> ValidationError:
    variants = model.variants()
    allowed = ", ".join(variants)
    tag = data.get("transform") if isinstance(data, dict) else None
    tag = tag if isinstance(tag, str) else None
    details: list[InitErrorDetails] = []
    for err in exc.errors(include_url=False):
        kind, loc = err["type"], tuple(err["loc"])
        if tag is not None and loc[:1] == (tag,):
            loc = loc[1:]
        if kind == "union_tag_invalid":
            given = data.get("transform")
            hint = suggest(str(given), set(variants))
            message = f"unknown transform {given!r}{hint}; allowed: {allowed}"
            error: Any = PydanticCustomError("unknown_transform", message)
            details.append({"type": error, "loc": ("transform",), "input": given})
        elif kind == "union_tag_not_found":
            message = f"required field 'transform' is missing; one of: {allowed}"
            error = PydanticCustomError("transform_missing", message)
            details.append({"type": error, "loc": ("transform",), "input": data})
        elif kind == "extra_forbidden" and len(loc) == 1 and tag in variants:
            fields = list(variants[tag].model_fields)
            hint = suggest(str(loc[0]), fields)
            message = f"unknown field {loc[0]!r}{hint}; {tag} takes: {', '.join(fields)}"
            error = PydanticCustomError("unknown_field", message)
            details.append({"type": error, "loc": loc, "input": data})
        elif kind in _KNOWN_ERRORS:
            detail: InitErrorDetails = {"type": kind, "loc": loc, "input": err["input"]}
            if "ctx" in err:
                detail["ctx"] = err["ctx"]
            details.append(detail)
        else:
            error = PydanticCustomError(kind, err["msg"])
            details.append({"type": error, "loc": loc, "input": err["input"]})
    return ValidationError.from_exception_data(exc.title, details)


# --------------------------------------------------------------------------- shared helpers


def _text(value: Any) -> str:
    """A value as text: nothing is "", lists and mappings are JSON, booleans true/false."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, list | tuple | dict) and not value


def _native(number: Decimal) -> int | float:
    """A whole number as int, anything else as float."""
    if number == number.to_integral_value():
        return int(number)
    return float(number)


def _check_region(region: str | None) -> str | None:
    if region is None:
        return None
    code = region.strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        hint = suggest(code, phonenumbers.SUPPORTED_REGIONS)
        raise ValueError(
            f"unknown region {region!r}{hint}; use an ISO 3166 country code such as HK, US or GB"
        )
    return code


Region = Annotated[str, AfterValidator(_check_region)]


# --------------------------------------------------------------------------- format_text


class TextSimple(_Transform):
    """Conversions that need nothing but the value.

    uppercase, lowercase; titlecase ("chan TAI man" → "Chan Tai Man": each word capitalised,
    the rest lowercased); capitalize (first letter upper case, the rest unchanged); trim
    (leading and trailing whitespace removed); length (number of characters); word_count;
    strip_html (tags removed, entities decoded, one line per paragraph); extract_email,
    extract_url (the first one in the text, or null); extract_number (the first number, e.g.
    "Total: HK$1,234.50" → 1234.5, or null).
    """

    transform: Literal[
        "uppercase",
        "lowercase",
        "titlecase",
        "capitalize",
        "trim",
        "length",
        "word_count",
        "strip_html",
        "extract_email",
        "extract_url",
        "extract_number",
    ] = Field(description=_TRANSFORM_HELP)
    value: Any = Field(description="The text; other values are turned into text, null into ''")


class TextReplace(_Transform):
    """Replace every occurrence of `find` (plain text, not a pattern) with `replace_with`."""

    transform: Literal["replace"] = Field(description=_TRANSFORM_HELP)
    value: Any = Field(description="The text; other values are turned into text, null into ''")
    find: str = Field(min_length=1, description="The text to look for (exact, case-sensitive)")
    replace_with: str = Field("", description="What to put in its place; empty removes it")


class TextTruncate(_Transform):
    """Shorten the text to at most `max_length` characters."""

    transform: Literal["truncate"] = Field(description=_TRANSFORM_HELP)
    value: Any = Field(description="The text; other values are turned into text, null into ''")
    max_length: int = Field(ge=1, description="Longest the result may be, in characters")
    append_ellipsis: bool = Field(
        False, description="End a shortened text with '...' (still within max_length)"
    )


class TextSplit(_Transform):
    """Split the text into parts and keep all of them (a list) or one of them."""

    transform: Literal["split"] = Field(description=_TRANSFORM_HELP)
    value: Any = Field(description="The text; other values are turned into text, null into ''")
    separator: str | None = Field(
        None, min_length=1, description="Where to split; default: any run of whitespace"
    )
    segment: Literal["all", "first", "last"] | int = Field(
        "all",
        description="Which part: all (a list), first, last, or an index (0 is the first, "
        "-1 the last); a missing part gives null",
    )


class TextDefault(_Transform):
    """The value itself, or `default` when the value is empty (null, blank text, empty list)."""

    transform: Literal["default_value"] = Field(description=_TRANSFORM_HELP)
    value: Any = Field(description="The value to check; returned unchanged when not empty")
    default: Any = Field(description="What to return when the value is empty")


class TextExtractPhone(_Transform):
    """The first phone number in the text, in E.164 form (+85291234567), or null."""

    transform: Literal["extract_phone_number"] = Field(description=_TRANSFORM_HELP)
    value: Any = Field(description="The text; other values are turned into text, null into ''")
    default_region: Region | None = Field(
        None,
        description="Country of numbers written without +country code, e.g. HK; "
        "without it only numbers starting with + are found",
    )


def _check_pattern(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    return pattern


class TextExtractPattern(_Transform):
    """The first match of a regular expression, or null when nothing matches.

    With named groups (`(?P<order>\\d+)`) the result is a mapping of group names to text;
    with unnamed groups it is the first group's text; otherwise the whole match.
    """

    transform: Literal["extract_pattern"] = Field(description=_TRANSFORM_HELP)
    value: Any = Field(description="The text; other values are turned into text, null into ''")
    pattern: Annotated[str, AfterValidator(_check_pattern)] = Field(
        min_length=1, description="A Python regular expression, e.g. 'Order #(\\d+)'"
    )
    ignore_case: bool = Field(False, description="Whether 'ABC' matches 'abc'")


class TextUrlCode(_Transform):
    """url_encode: make the text safe inside a URL ("a b&c" → "a%20b%26c"); url_decode: undo it."""

    transform: Literal["url_encode", "url_decode"] = Field(description=_TRANSFORM_HELP)
    value: Any = Field(description="The text; other values are turned into text, null into ''")
    spaces_as_plus: bool = Field(
        False, description="Write spaces as '+' (and read '+' as a space), as HTML forms do"
    )


class FormatTextInput(_ByTransform):
    root: (
        TextSimple
        | TextReplace
        | TextTruncate
        | TextSplit
        | TextDefault
        | TextExtractPhone
        | TextExtractPattern
        | TextUrlCode
    ) = Field(discriminator="transform")


class FormatTextOutput(BaseModel):
    output: Any = Field(
        description="The result: text, a number (length, word_count, extract_number), a list "
        "(split with segment all), a mapping (extract_pattern with named groups), or null"
    )


_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_URL = re.compile(r"(?:https?://|www\.)[^\s<>\"'\[\]]+", re.IGNORECASE)
_NUMBER_IN_TEXT = re.compile(r"(?:(?<!\w)-)?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?")
_WORD_START = re.compile(r"(^|[\s\-/(\[\"“])(\w)")


class _PlainText(HTMLParser):
    _SKIP = frozenset({"script", "style", "head", "title"})
    _BLOCK = frozenset(
        {"p", "div", "li", "tr", "br", "ul", "ol", "table", "blockquote", "section", "article"}
        | {f"h{i}" for i in range(1, 7)}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in self._SKIP:
            self.skipping += 1
        elif tag == "br":
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: Any) -> None:
        if tag == "br":
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


def _strip_html(text: str) -> str:
    parser = _PlainText()
    parser.feed(text)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)


def _truncate(text: str, limit: int, ellipsis: bool) -> str:
    if len(text) <= limit:
        return text
    if ellipsis and limit > 3:
        return text[: limit - 3].rstrip() + "..."
    return text[:limit]


def _split(text: str, t: TextSplit) -> Any:
    parts = text.split(t.separator) if t.separator is not None else text.split()
    if t.segment == "all":
        return parts
    index = 0 if t.segment == "first" else -1 if t.segment == "last" else int(t.segment)
    try:
        return parts[index]
    except IndexError:
        return None


def _extract_pattern(text: str, t: TextExtractPattern) -> Any:
    match = re.search(t.pattern, text, re.IGNORECASE if t.ignore_case else 0)
    if match is None:
        return None
    if match.re.groupindex:
        return match.groupdict()
    return match.group(1) if match.re.groups else match.group(0)


def _extract_phone(text: str, region: str | None) -> str | None:
    for found in phonenumbers.PhoneNumberMatcher(text, region):
        return phonenumbers.format_number(found.number, phonenumbers.PhoneNumberFormat.E164)
    return None


def _extract_url(text: str) -> str | None:
    match = _URL.search(text)
    if match is None:
        return None
    url = match.group(0).rstrip(".,;:!?")
    if url.endswith(")") and "(" not in url:
        url = url.rstrip(")").rstrip(".,;:!?")
    return url


def _extract_number(text: str) -> int | float | None:
    match = _NUMBER_IN_TEXT.search(text)
    return None if match is None else _native(Decimal(match.group(0).replace(",", "")))


def _format_text(t: Any) -> Any:
    if isinstance(t, TextDefault):
        return t.default if _is_empty(t.value) else t.value
    text = _text(t.value)
    match t.transform:
        case "uppercase":
            return text.upper()
        case "lowercase":
            return text.lower()
        case "titlecase":
            return _WORD_START.sub(lambda m: m[1] + m[2].upper(), text.lower())
        case "capitalize":
            return re.sub(r"\S", lambda m: m[0].upper(), text, count=1)
        case "trim":
            return text.strip()
        case "length":
            return len(text)
        case "word_count":
            return len(text.split())
        case "strip_html":
            return _strip_html(text)
        case "extract_email":
            match = _EMAIL.search(text)
            return None if match is None else match.group(0)
        case "extract_url":
            return _extract_url(text)
        case "extract_number":
            return _extract_number(text)
        case "extract_phone_number":
            return _extract_phone(text, t.default_region)
        case "extract_pattern":
            return _extract_pattern(text, t)
        case "replace":
            return text.replace(t.find, t.replace_with)
        case "truncate":
            return _truncate(text, t.max_length, t.append_ellipsis)
        case "split":
            return _split(text, t)
        case "url_encode":
            return quote_plus(text, safe="") if t.spaces_as_plus else quote(text, safe="")
        case "url_decode":
            return unquote_plus(text) if t.spaces_as_plus else unquote(text)
    raise AssertionError(f"unhandled transform {t.transform!r}")  # pragma: no cover


@app.action("format_text", title="Formatter: text", side_effects=False)
async def format_text(input: FormatTextInput, ctx: ActionContext) -> FormatTextOutput:
    """Converts text: change case, trim, replace, truncate, split, give a default, find an
    email, phone number, URL, number or pattern in it, URL-encode or decode it, strip HTML,
    count its characters or words. Pick the conversion with `transform`."""
    return FormatTextOutput(output=_format_text(input.root))


# --------------------------------------------------------------------------- format_number

_LARGEST_DIGITS = 30
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_CURRENCY_AROUND = re.compile(
    r"^([+-]?)\s*(?:[A-Z]{2,3}\s*[$€£¥]?|[$€£¥₩₹₱฿])?\s*(.*?)\s*(?:[A-Z]{3}|[$€£¥])?$"
)


def _number(value: Any, field: str, decimal_separator: str = ".") -> Decimal:
    """A number from a number or from text such as "1,234.5", "-HK$ 20", "12.50 USD"."""
    if _is_empty(value):
        raise PermanentError(f"`{field}` is empty: expected a number")
    if isinstance(value, bool | dict | list):
        raise PermanentError(f"`{field}` {value!r} is not a number")
    if isinstance(value, int | Decimal):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(repr(value))
    else:
        text = str(value).strip()
        around = _CURRENCY_AROUND.match(text)
        assert around is not None  # the pattern matches any text
        digits = around.group(1) + re.sub(r"[\s_']", "", around.group(2))
        thousands = "." if decimal_separator == "," else ","
        digits = digits.replace(thousands, "").replace(decimal_separator, ".")
        if not _NUMBER.fullmatch(digits):
            raise PermanentError(f"`{field}` {value!r} is not a number")
        number = Decimal(digits)
    if not number.is_finite():
        raise PermanentError(f"`{field}` {value!r} is not a finite number")
    if number and number.adjusted() > _LARGEST_DIGITS:
        raise PermanentError(f"`{field}` {value!r} is too large (over {_LARGEST_DIGITS} digits)")
    return number


def _none_separator(value: Any) -> Any:
    return "none" if value is None or value == "" else value


ThousandsSeparator = Annotated[
    Literal[",", ".", " ", "'", "none"], BeforeValidator(_none_separator)
]
_ROUNDING = {
    "half_up": ROUND_HALF_UP,
    "half_even": ROUND_HALF_EVEN,
    "up": ROUND_UP,
    "down": ROUND_DOWN,
    "ceiling": ROUND_CEILING,
    "floor": ROUND_FLOOR,
}


class _NumberTransform(_Transform):
    value: Any = Field(description="A number, or text such as '1,234.50' or 'HK$1,234.50'")
    value_decimal_separator: Literal[".", ","] = Field(
        ".", description="How the value writes decimals: '.' for 1,234.5, ',' for 1.234,5"
    )


class _SeparatedNumber(_NumberTransform):
    thousands_separator: ThousandsSeparator = Field(
        ",", description="Between groups of thousands: ',', '.', ' ', \"'\" or none"
    )
    decimal_separator: Literal[".", ","] | None = Field(
        None,
        validate_default=True,
        description="Before the decimals: '.' or ','; default '.', or ',' when "
        "thousands_separator is '.'",
    )

    @field_validator("decimal_separator", mode="before")
    @classmethod
    def _resolve_decimal_separator(cls, value: Any, info: ValidationInfo) -> Any:
        thousands = info.data.get("thousands_separator")
        if value is None:
            return "," if thousands == "." else "."
        if value == thousands:
            raise ValueError("must differ from thousands_separator")
        return value


class NumberFormat(_SeparatedNumber):
    """Write a number with thousands separators and a fixed number of decimals.

    1234.5 → "1,234.50" (decimal_places 2); rounds half up.
    """

    transform: Literal["format_number"] = Field(description=_TRANSFORM_HELP)
    decimal_places: int | None = Field(
        None, ge=0, le=20, description="Decimals to show; default: as many as the value has"
    )


_CURRENCY_SYMBOLS = {
    "USD": "$", "HKD": "HK$", "EUR": "€", "GBP": "£", "JPY": "¥", "CNY": "CN¥", "TWD": "NT$",
    "MOP": "MOP$", "SGD": "S$", "AUD": "A$", "CAD": "CA$", "NZD": "NZ$", "KRW": "₩", "INR": "₹",
    "PHP": "₱", "THB": "฿", "MYR": "RM", "IDR": "Rp", "VND": "₫",
}  # fmt: skip
_MINOR_UNITS = {
    **dict.fromkeys(["JPY", "KRW", "VND", "CLP", "ISK", "PYG", "UGX", "XAF", "XOF"], 0),
    **dict.fromkeys(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"], 3),
}


def _check_currency(code: str) -> str:
    code = code.strip().upper()
    if not re.fullmatch(r"[A-Z]{3}", code):
        raise ValueError("must be a three-letter ISO 4217 code such as HKD, USD or EUR")
    return code


class NumberCurrency(_SeparatedNumber):
    """Write an amount of money.

    With display symbol (the default) and a currency in zapflow's symbol table (USD $, HKD HK$,
    EUR €, GBP £, JPY ¥, CNY CN¥, TWD NT$, MOP MOP$, SGD S$, AUD A$, CAD CA$, NZD NZ$, KRW ₩,
    INR ₹, PHP ₱, THB ฿, MYR RM, IDR Rp, VND ₫) the symbol comes first: "HK$1,234.50",
    "-$5.00". Otherwise the code comes last: "1,234.50 HKD". Decimals default to the
    currency's (0 for JPY and KRW, 3 for KWD, else 2); rounds half up.
    """

    transform: Literal["format_currency"] = Field(description=_TRANSFORM_HELP)
    currency: Annotated[str, AfterValidator(_check_currency)] = Field(
        description="ISO 4217 currency code, e.g. HKD, USD, EUR"
    )
    display: Literal["symbol", "code"] = Field(
        "symbol", description="symbol: HK$1,234.50; code: 1,234.50 HKD"
    )
    decimal_places: int | None = Field(
        None, ge=0, le=6, description="Decimals to show; default: the currency's usual number"
    )


class NumberRound(_NumberTransform):
    """Round a number; the result is a number (a whole number when decimal_places is 0)."""

    transform: Literal["round"] = Field(description=_TRANSFORM_HELP)
    decimal_places: int = Field(
        0, ge=-10, le=20, description="Decimals to keep; negative rounds to tens (-1), hundreds …"
    )
    mode: Literal["half_up", "half_even", "up", "down", "ceiling", "floor"] = Field(
        "half_up",
        description="half_up: 2.5 → 3; half_even: 2.5 → 2 (banker's); up: away from zero; "
        "down: towards zero; ceiling: towards +∞; floor: towards -∞",
    )


_BINARY_OPERATIONS = frozenset({"add", "subtract", "multiply", "divide"})


class NumberMath(_NumberTransform):
    """Arithmetic on `value` and `operands`, left to right: value - operands[0] - operands[1] …

    add, subtract, multiply, divide take at least one operand; sum, average, min and max work
    on all the numbers together. `value` may itself be a list of numbers.
    """

    transform: Literal["math"] = Field(description=_TRANSFORM_HELP)
    value: Any = Field(
        description="A number (or numeric text), or a list of them, e.g. line item prices"
    )
    operation: Literal["add", "subtract", "multiply", "divide", "sum", "average", "min", "max"] = (
        Field(description="What to compute")
    )
    operands: list[Any] = Field(
        default_factory=list,
        validate_default=True,
        description="The other numbers (numbers or numeric text)",
    )

    @field_validator("operands")
    @classmethod
    def _binary_needs_operand(cls, value: list[Any], info: ValidationInfo) -> list[Any]:
        operation = info.data.get("operation")
        if operation in _BINARY_OPERATIONS and not value:
            raise ValueError(f"{operation} needs at least one operand")
        return value


class NumberPhone(_Transform):
    """Write a phone number in a standard form; fails when it is not a valid number.

    e164: +85291234567; international: +852 9123 4567; national: 9123 4567;
    rfc3966: tel:+852-9123-4567.
    """

    transform: Literal["format_phone_number"] = Field(description=_TRANSFORM_HELP)
    value: Any = Field(description="The phone number, e.g. '9123 4567' or '+852 9123 4567'")
    to_format: Literal["e164", "international", "national", "rfc3966"] = Field(
        "e164", description="How to write it"
    )
    default_region: Region | None = Field(
        None,
        description="Country of numbers written without +country code (ISO 3166, e.g. HK)",
    )


class FormatNumberInput(_ByTransform):
    root: NumberFormat | NumberCurrency | NumberRound | NumberMath | NumberPhone = Field(
        discriminator="transform"
    )


class FormatNumberOutput(BaseModel):
    output: Any = Field(description="The result: a number for round and math, text for the others")


def _written(number: Decimal, places: int | None, thousands: str, decimal: str | None) -> str:
    if places is not None:
        number = number.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    if number == 0:
        number = abs(number)
    marks: dict[str, str] = {",": "" if thousands == "none" else thousands, ".": decimal or "."}
    return format(number, ",f").translate(str.maketrans(marks))  # type: ignore[arg-type]


def _currency(t: NumberCurrency) -> str:
    number = _number(t.value, "value", t.value_decimal_separator)
    places = t.decimal_places if t.decimal_places is not None else _MINOR_UNITS.get(t.currency, 2)
    amount = _written(number, places, t.thousands_separator, t.decimal_separator)
    sign, amount = ("-", amount[1:]) if amount.startswith("-") else ("", amount)
    symbol = _CURRENCY_SYMBOLS.get(t.currency)
    if t.display == "symbol" and symbol:
        return f"{sign}{symbol}{amount}"
    return f"{sign}{amount} {t.currency}"


def _math(t: NumberMath) -> int | float:
    if isinstance(t.value, list):
        named = [(f"value[{i}]", v) for i, v in enumerate(t.value)]
    else:
        named = [("value", t.value)]
    named += [(f"operands[{i}]", v) for i, v in enumerate(t.operands)]
    numbers = [_number(v, name, t.value_decimal_separator) for name, v in named]
    if not numbers:
        raise PermanentError("`value` is an empty list: there is nothing to compute")
    first, rest = numbers[0], numbers[1:]
    match t.operation:
        case "add" | "sum":
            result = sum(numbers, Decimal(0))
        case "subtract":
            result = first - sum(rest, Decimal(0))
        case "multiply":
            result = math.prod(numbers, start=Decimal(1))
        case "divide":
            result = first
            for (name, given), divisor in zip(named[1:], rest, strict=True):
                if divisor == 0:
                    raise PermanentError(f"cannot divide by zero: `{name}` is {given!r}")
                result /= divisor
        case "average":
            result = sum(numbers, Decimal(0)) / len(numbers)
        case "min":
            result = min(numbers)
        case "max":
            result = max(numbers)
    return _native(result)


_PHONE_FORMATS = {
    "e164": phonenumbers.PhoneNumberFormat.E164,
    "international": phonenumbers.PhoneNumberFormat.INTERNATIONAL,
    "national": phonenumbers.PhoneNumberFormat.NATIONAL,
    "rfc3966": phonenumbers.PhoneNumberFormat.RFC3966,
}


def _phone(t: NumberPhone) -> str:
    text = _text(t.value).strip()
    where = f" (default_region {t.default_region})" if t.default_region else ""
    try:
        number = phonenumbers.parse(text, t.default_region)
    except phonenumbers.NumberParseException as exc:
        if exc.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE:
            reason = "it has no valid country code; start it with + or give default_region"
        else:
            reason = str(exc.args[0] if exc.args else exc).rstrip(".").lower()
        message = f"`value` {t.value!r} is not a phone number{where}: {reason}"
        raise PermanentError(message) from None
    if not phonenumbers.is_valid_number(number):
        raise PermanentError(f"`value` {t.value!r} is not a valid phone number{where}")
    return phonenumbers.format_number(number, _PHONE_FORMATS[t.to_format])


def _format_number(t: Any) -> Any:
    match t:
        case NumberPhone():
            return _phone(t)
        case NumberCurrency():
            return _currency(t)
        case NumberMath():
            return _math(t)
    number = _number(t.value, "value", t.value_decimal_separator)
    match t:
        case NumberFormat():
            return _written(number, t.decimal_places, t.thousands_separator, t.decimal_separator)
        case NumberRound():
            step = Decimal(1).scaleb(-t.decimal_places)
            return _native(number.quantize(step, rounding=_ROUNDING[t.mode]))
    raise AssertionError(f"unhandled transform {t.transform!r}")  # pragma: no cover


@app.action("format_number", title="Formatter: numbers", side_effects=False)
async def format_number(input: FormatNumberInput, ctx: ActionContext) -> FormatNumberOutput:
    """Converts numbers: write them with separators and decimals, as money, round them, do
    arithmetic, or write a phone number in a standard form. Numbers may be given as text such
    as "1,234.50". Pick the conversion with `transform`."""
    try:
        return FormatNumberOutput(output=_format_number(input.root))
    except DecimalException:
        raise PermanentError(
            f"{input.root.transform}: the number is too large for the decimals asked"
        ) from None


# --------------------------------------------------------------------------- format_date

NAMED_FORMATS = ("iso", "date", "unix", "unix_ms", "rfc2822", "dd/mm/yyyy")
_STRFTIME = {"date": "%Y-%m-%d", "dd/mm/yyyy": "%d/%m/%Y"}
_EPOCH = re.compile(r"[+-]?\d+(?:\.\d+)?")
_COMPACT = {8: "%Y%m%d", 14: "%Y%m%d%H%M%S"}
_MILLISECONDS_FROM = 100_000_000_000
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _check_format(value: str) -> str:
    if value in NAMED_FORMATS or "%" in value:
        return value
    raise ValueError(
        f"{value!r} is neither a named format ({', '.join(NAMED_FORMATS)}) "
        "nor a strftime pattern such as '%d/%m/%Y %H:%M'"
    )


@functools.cache
def _zone_names() -> frozenset[str]:
    return frozenset(available_timezones())


def _check_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        hint = suggest(name, _zone_names())
        raise ValueError(
            f"unknown time zone {name!r}{hint}; use an IANA name such as 'Asia/Hong_Kong' or 'UTC'"
        ) from None
    return name


DateFormat = Annotated[str, AfterValidator(_check_format)]
TimeZone = Annotated[str, AfterValidator(_check_zone)]


class _DateTransform(_Transform):
    value: Any = Field(
        description="The date: ISO 8601, Unix time in seconds or milliseconds, or text such "
        "as '25 Nov 2026 2:30pm'"
    )
    from_format: DateFormat | None = Field(
        None,
        description="How the value is written, when guessing is not enough: a strftime "
        "pattern such as '%d/%m/%Y %H:%M', or iso, date, unix, unix_ms, rfc2822, dd/mm/yyyy",
    )
    from_timezone: TimeZone = Field(
        "UTC", description="Time zone of values that carry none (IANA name, e.g. Asia/Hong_Kong)"
    )
    day_first: bool = Field(
        False, description="Read a guessed '01/02/2026' as 1 February rather than January 2"
    )


class _DateToFormat(_DateTransform):
    to_format: DateFormat = Field(
        "iso",
        description="How to write the result: iso (2026-11-25T14:30:00+08:00), date "
        "(2026-11-25), unix (seconds, a number), unix_ms, rfc2822, dd/mm/yyyy, or a strftime "
        "pattern such as '%d %b %Y %H:%M'",
    )
    to_timezone: TimeZone | None = Field(
        None,
        description="Time zone to write the result in (IANA name, e.g. Asia/Hong_Kong); "
        "default: the value's own offset, else from_timezone",
    )


class DateFormatting(_DateToFormat):
    """Read a date and time and write it in another format or time zone."""

    transform: Literal["format"] = Field(description=_TRANSFORM_HELP)


class DateAdd(_DateToFormat):
    """Add (or, with a negative amount, subtract) time, then write the result as `format` does.

    Years, months, weeks and days move the calendar date, keeping the wall-clock time (31 Jan
    + 1 month = 28 or 29 Feb); hours, minutes and seconds add elapsed time.
    """

    transform: Literal["add"] = Field(description=_TRANSFORM_HELP)
    unit: Literal["years", "months", "weeks", "days", "hours", "minutes", "seconds"] = Field(
        description="Unit of amount"
    )
    amount: float = Field(
        allow_inf_nan=False, description="How many units to add; negative subtracts"
    )

    @field_validator("amount")
    @classmethod
    def _whole_months(cls, value: float, info: ValidationInfo) -> float:
        if info.data.get("unit") in ("years", "months") and not float(value).is_integer():
            raise ValueError(f"{info.data['unit']} must be added in whole numbers")
        return value


class DateCompare(_DateTransform):
    """Compare two dates: which one is earlier, and how many seconds from value to other."""

    transform: Literal["compare"] = Field(description=_TRANSFORM_HELP)
    other: Any = Field(description="The date to compare the value with, read like the value")


class FormatDateInput(_ByTransform):
    root: DateFormatting | DateAdd | DateCompare = Field(discriminator="transform")


class FormatDateOutput(BaseModel):
    output: Any = Field(
        description="The written date (a number for unix and unix_ms); for compare a mapping: "
        "earlier (value, other or same) and difference_seconds (other minus value)"
    )


def _is_epoch(value: Any, t: _DateTransform) -> bool:
    if t.from_format in ("unix", "unix_ms"):
        return True
    if t.from_format is not None or isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    text = value.strip() if isinstance(value, str) else ""
    return bool(_EPOCH.fullmatch(text)) and not (len(text) in _COMPACT and text.isdigit())


def _from_epoch(value: Any, unit: str | None) -> datetime:
    try:
        number = Decimal(repr(value) if isinstance(value, int | float) else _text(value).strip())
    except InvalidOperation:
        raise ValueError("not a number of seconds or milliseconds") from None
    if unit == "unix_ms" or (unit is None and abs(number) >= _MILLISECONDS_FROM):
        number /= 1000
    return _UNIX_EPOCH + timedelta(seconds=float(number))


def _parse_text(text: str, fmt: str | None, day_first: bool) -> datetime:
    if fmt is None:
        if len(text) in _COMPACT and text.isdigit():
            return datetime.strptime(text, _COMPACT[len(text)])
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # dateutil warns about unknown zone names
                return dateparser.parse(text, dayfirst=day_first)
    if fmt == "iso":
        return datetime.fromisoformat(text)
    if fmt == "rfc2822":
        return parsedate_to_datetime(text)
    return datetime.strptime(text, _STRFTIME.get(fmt, fmt))


def _moment(value: Any, field: str, t: _DateTransform) -> datetime:
    """The moment a value stands for, always with a time zone.

    Unix times are shown in from_timezone; values without an offset are taken in it.
    """
    if _is_empty(value):
        raise PermanentError(f"`{field}` is empty: expected a date")
    zone = ZoneInfo(t.from_timezone)
    try:
        if isinstance(value, datetime):  # YAML reads unquoted timestamps as datetimes
            moment = value
        elif isinstance(value, date):
            moment = datetime.combine(value, time())
        elif _is_epoch(value, t):
            return _from_epoch(value, t.from_format).astimezone(zone)
        else:
            moment = _parse_text(_text(value).strip(), t.from_format, t.day_first)
    except (ValueError, OverflowError) as exc:
        how = f" written as {t.from_format!r}" if t.from_format else ""
        raise PermanentError(f"`{field}` {value!r} is not a date{how}: {exc}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)


def _written_date(moment: datetime, t: DateFormatting | DateAdd) -> str | int:
    if t.to_timezone:
        moment = moment.astimezone(ZoneInfo(t.to_timezone))
    match t.to_format:
        case "iso":
            return moment.isoformat()
        case "unix":
            return (moment - _UNIX_EPOCH) // timedelta(seconds=1)
        case "unix_ms":
            return (moment - _UNIX_EPOCH) // timedelta(milliseconds=1)
        case "rfc2822":
            return format_datetime(moment)
    return moment.strftime(_STRFTIME.get(t.to_format, t.to_format))


def _added(moment: datetime, t: DateAdd) -> datetime:
    if t.unit in ("hours", "minutes", "seconds"):
        later = moment.astimezone(UTC) + timedelta(**{t.unit: t.amount})
        return later.astimezone(moment.tzinfo)
    amount: float | int = int(t.amount) if t.unit in ("years", "months") else t.amount
    return moment + relativedelta(**{t.unit: amount})  # type: ignore[arg-type]


def _compare(t: DateCompare) -> dict[str, Any]:
    first, second = _moment(t.value, "value", t), _moment(t.other, "other", t)
    difference = second - first
    earlier = "same" if first == second else ("value" if first < second else "other")
    seconds = Decimal(difference // timedelta(microseconds=1)) / 1_000_000
    return {"earlier": earlier, "difference_seconds": _native(seconds)}


@app.action("format_date", title="Formatter: dates and times", side_effects=False)
async def format_date(input: FormatDateInput, ctx: ActionContext) -> FormatDateOutput:
    """Converts dates and times: read them in almost any form (ISO 8601, Unix time, '25 Nov
    2026 2:30pm', or a given strftime pattern), write them in another format or time zone,
    add or subtract time, or compare two of them. Pick the conversion with `transform`."""
    t = input.root
    if isinstance(t, DateCompare):
        return FormatDateOutput(output=_compare(t))
    moment = _moment(t.value, "value", t)
    if isinstance(t, DateAdd):
        try:
            moment = _added(moment, t)
        except (OverflowError, ValueError):
            raise PermanentError(
                f"adding {t.amount:g} {t.unit} to {t.value!r} leaves the supported years 1-9999"
            ) from None
    return FormatDateOutput(output=_written_date(moment, t))
