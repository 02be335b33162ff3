"""``builtin.format_text``: conversions of text."""

from __future__ import annotations

import re
from decimal import (
    Decimal,
)
from html.parser import HTMLParser
from typing import Annotated, Any, Literal
from urllib.parse import quote, quote_plus, unquote, unquote_plus

import phonenumbers
from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
)

from connectors._contract import ActionContext
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
