"""Rows of a sheet by header name: what the spreadsheet and Google Sheets apps share.

A sheet is a header row (row 1) and data rows under it. Steps name columns by their header
text; a name matches a header cell exactly or, failing that, ignoring case and spaces around it.
Rows are compared as text the way a person reads the sheet (``42`` equals ``42.0``, ``TRUE`` a
true checkbox), and a row's fingerprint for the polling trigger is taken from that same text.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any

from connectors._contract import PollResult
from connectors._errors import PermanentError
from connectors.registry import suggest

HEADER_ROW = 1
FIRST_DATA_ROW = HEADER_ROW + 1


def plain(value: Any) -> Any:
    """A cell as a step output holds it: JSON scalars, null when empty; dates as ISO text (a
    midnight datetime, as spreadsheets store dates, as the date alone)."""
    if isinstance(value, datetime):
        if value.time() == time(0) and value.tzinfo is None:
            return value.date().isoformat()
        return value.isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value == "":
        return None  # an empty cell reads the same in every format
    return value


def text_of(value: Any) -> str:
    """A cell as a person reads it: "" when empty, whole numbers without ".0", TRUE/FALSE."""
    value = plain(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


_DECIMAL = re.compile(r"-?(0|[1-9]\d*)(\.\d+)?")
"""A number as written plainly: not "007" or "+852…", which are codes, not amounts."""


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        return float(value)
    return None


def same_value(cell: Any, wanted: Any, *, ignore_case: bool = False) -> bool:
    """Whether a cell holds ``wanted``: as numbers when both are numbers or plainly written
    ones (the cell 42 matches "42.0", "12" matches "12.0", but "007" does not match "7"), else
    as text."""
    a, b = _number(plain(cell)), _number(plain(wanted))
    if a is not None and b is not None:
        return a == b
    left, right = text_of(cell), text_of(wanted)
    if ignore_case:
        return left.casefold() == right.casefold()
    return left == right


def _loose(name: str) -> str:
    return " ".join(name.split()).casefold()


@dataclass
class Header:
    """The header row's cells as text ("" for an empty cell)."""

    names: list[str]

    @classmethod
    def of(cls, cells: list[Any]) -> Header:
        names = [text_of(c) for c in cells]
        while names and not names[-1]:
            names.pop()
        return cls(names)

    def columns(self) -> list[str]:
        """The named columns, each once, in sheet order."""
        return list(dict.fromkeys(n for n in self.names if n))

    def find(self, column: str) -> int | None:
        """The 0-based index of a column: an exact match, else one ignoring case and spaces."""
        if column in self.names:
            return self.names.index(column)
        loose = _loose(column)
        return next((i for i, n in enumerate(self.names) if n and _loose(n) == loose), None)

    def require(self, column: str, where: str) -> int:
        index = self.find(column)
        if index is None:
            raise PermanentError(f"{where} has no column {column!r}{self._hint(column)}")
        return index

    def _hint(self, column: str) -> str:
        columns = self.columns()
        if not columns:
            return " (it has no header row yet)"
        return f"{suggest(column, columns)}; its columns: {', '.join(columns)}"

    def place(
        self, values: Mapping[str, Any], *, add_columns: bool, where: str
    ) -> tuple[dict[int, Any], list[str]]:
        """Each value's column index, and the columns added to the header for it.

        A column the header lacks is added at its end with ``add_columns``; without it the
        step fails naming the columns there are, so a typo never starts a new column.
        """
        missing = [c for c in values if self.find(c) is None]
        if missing and self.columns() and not add_columns:
            listed = ", ".join(repr(c) for c in missing)
            raise PermanentError(
                f"{where} has no column {listed}{self._hint(missing[0])}. Fix the name, or "
                "set add_columns: true to add it to the header"
            )
        self.names.extend(missing)
        return {self.require(c, where): v for c, v in values.items()}, missing


@dataclass
class Table:
    """A sheet's header and data rows (row 2 onwards), trailing empty rows left out."""

    header: Header
    rows: list[list[Any]] = field(default_factory=list)

    @classmethod
    def of(cls, values: list[list[Any]] | list[tuple[Any, ...]]) -> Table:
        rows = [list(r) for r in values]
        while rows and not any(text_of(c) for c in rows[-1]):
            rows.pop()
        if not rows:
            return cls(Header([]))
        return cls(Header.of(rows[0]), rows[1:])

    @property
    def next_row(self) -> int:
        """The row number a new row goes to."""
        return FIRST_DATA_ROW + len(self.rows) if self.header.names else FIRST_DATA_ROW

    def record(self, cells: list[Any]) -> dict[str, Any]:
        """A row as column → value (the first of two same-named columns wins)."""
        out: dict[str, Any] = {}
        for i, name in enumerate(self.header.names):
            if name and name not in out:
                out[name] = plain(cells[i]) if i < len(cells) else None
        return out

    def numbered(self) -> Iterator[tuple[int, list[Any]]]:
        """(row number, cells) of each row that is not empty."""
        for i, cells in enumerate(self.rows):
            if any(text_of(c) for c in cells):
                yield FIRST_DATA_ROW + i, cells

    def cells(self, number: int) -> list[Any]:
        index = number - FIRST_DATA_ROW
        return self.rows[index] if 0 <= index < len(self.rows) else []

    def find(self, column: str | None, value: Any, *, ignore_case: bool, where: str) -> list[int]:
        """The row numbers where ``column`` holds ``value`` (every row when no column)."""
        if column is None:
            return [n for n, _ in self.numbered()]
        index = self.header.require(column, where)
        return [
            n
            for n, cells in self.numbered()
            if same_value(
                cells[index] if index < len(cells) else None, value, ignore_case=ignore_case
            )
        ]


# --------------------------------------------------------------------------- new or updated rows


def _digest(record: Mapping[str, Any], columns: list[str]) -> str:
    shown = {c: text_of(record.get(c)) for c in columns}
    text = json.dumps({c: v for c, v in shown.items() if v}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _identities(table: Table, key_column: str | None, where: str) -> Iterator[tuple[str, int]]:
    """(identity, row number) of each row: its key column's text (a repeated key gets " (2)",
    " (3)" …), or its row number; rows with an empty key are left out until they have one."""
    index = table.header.require(key_column, where) if key_column else None
    times: dict[str, int] = {}
    for number, cells in table.numbered():
        if index is None:
            yield str(number), number
            continue
        key = text_of(cells[index]) if index < len(cells) else ""
        if key:
            times[key] = times.get(key, 0) + 1
            yield (key if times[key] == 1 else f"{key} ({times[key]})"), number


def row_changes(
    table: Table,
    cursor: dict[str, Any] | None,
    *,
    key_column: str | None,
    watch_columns: list[str],
    where: str,
) -> PollResult:
    """The rows that are new or changed since the cursor, as a poll's items.

    The cursor keeps each row's fingerprint and the change number it was last seen with
    (``{"seq": 7, "rows": {identity: [fingerprint, 7]}}``); each new or changed row takes the
    next number, and its dedupe key is ``identity#number``. A poll repeated from the same cursor
    (after a crash) makes the same keys, so the inbox stores each change once; a row changed
    back to an earlier content, or deleted and added again, is a new change all the same.
    """
    for column in watch_columns:
        table.header.require(column, where)
    watched = watch_columns or table.header.columns()
    seq = int((cursor or {}).get("seq", 0))
    known: dict[str, list[Any]] = (cursor or {}).get("rows", {})
    now: dict[str, list[Any]] = {}
    items: list[tuple[str, dict[str, Any]]] = []
    for identity, number in _identities(table, key_column, where):
        record = table.record(table.cells(number))
        digest, before = _digest(record, watched), known.get(identity)
        if before is not None and before[0] == digest:
            now[identity] = before
            continue
        seq += 1
        now[identity] = [digest, seq]
        change = "new" if before is None else "updated"
        payload = {"change": change, "row_number": number, "key": identity, "row": record}
        items.append((f"{identity}#{seq}", payload))
    return PollResult(items, {"seq": seq, "rows": now})


# --------------------------------------------------------------------------- what a write changes


@dataclass
class RowWrite:
    """One row to write: its number, its cells by 0-based column, and the header to write
    first when the step started or extended it (None when it stays as it is)."""

    number: int
    cells: dict[int, Any]
    header: list[str] | None
    added: list[str]
    created: bool = False

    def merged(self, table: Table) -> dict[str, Any]:
        """The row as it reads after the write."""
        cells = list(table.cells(self.number))
        width = max([len(table.header.names), len(cells), *(i + 1 for i in self.cells)])
        cells += [None] * (width - len(cells))
        for index, value in self.cells.items():
            cells[index] = value
        return table.record(cells)


def plan_append(table: Table, row: Mapping[str, Any], *, add_columns: bool, where: str) -> RowWrite:
    """Where a new row goes; on an empty sheet its columns become the header row."""
    created = not table.header.names
    number = table.next_row
    cells, added = table.header.place(row, add_columns=add_columns or created, where=where)
    header = list(table.header.names) if added else None
    return RowWrite(number, cells, header, [] if created else added, created)


def plan_update(
    table: Table,
    number: int,
    row: Mapping[str, Any],
    *,
    add_columns: bool,
    where: str,
) -> tuple[RowWrite, list[str]]:
    """The write that changes row ``number``, and the columns whose value it changes."""
    if not table.header.names:
        raise PermanentError(f"{where} is empty: there is no row {number} to change")
    before = table.cells(number)
    cells, added = table.header.place(row, add_columns=add_columns, where=where)
    changed = [
        table.header.names[i]
        for i, value in cells.items()
        if text_of(before[i] if i < len(before) else None) != text_of(value)
    ]
    return RowWrite(number, cells, list(table.header.names) if added else None, added), changed
