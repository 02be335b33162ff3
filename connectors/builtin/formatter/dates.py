"""``builtin.format_date``: dates and times."""

from __future__ import annotations

import functools
import re
import warnings
from datetime import UTC, date, datetime, time, timedelta
from decimal import (
    Decimal,
    InvalidOperation,
)
from email.utils import format_datetime, parsedate_to_datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from dateutil import parser as dateparser
from dateutil.relativedelta import relativedelta
from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    ValidationInfo,
    field_validator,
)

from connectors._contract import ActionContext
from connectors._errors import PermanentError
from connectors.builtin._app import app
from connectors.builtin.formatter._common import (
    _TRANSFORM_HELP,
    _ByTransform,
    _is_empty,
    _native,
    _text,
    _Transform,
)
from connectors.registry import suggest

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
