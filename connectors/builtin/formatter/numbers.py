"""``builtin.format_number``: numbers, money and phone numbers."""

from __future__ import annotations

import math
import re
from decimal import (
    ROUND_CEILING,
    ROUND_DOWN,
    ROUND_FLOOR,
    ROUND_HALF_EVEN,
    ROUND_HALF_UP,
    ROUND_UP,
    Decimal,
    DecimalException,
)
from typing import Annotated, Any, Literal

import phonenumbers
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    ValidationInfo,
    field_validator,
)

from connectors._contract import ActionContext
from connectors._errors import PermanentError
from connectors.builtin._app import app
from connectors.builtin.formatter._common import (
    _TRANSFORM_HELP,
    Region,
    _ByTransform,
    _is_empty,
    _native,
    _text,
    _Transform,
)

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
