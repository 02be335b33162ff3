"""What a step does with a sheet's rows, once the app has read them: the same for a local file
and a Google sheet. The app reads the table, asks here what to write, and writes it."""

from __future__ import annotations

from dataclasses import dataclass

from connectors._errors import PermanentError
from connectors._sheets.models import (
    AppendedRow,
    AppendFields,
    FindFields,
    FoundRows,
    UpdatedRow,
    UpdateFields,
)
from connectors._sheets.table import RowWrite, Table, plan_append, plan_update, text_of


def find(table: Table, fields: FindFields, where: str) -> FoundRows:
    """The rows where the column holds the value (every row without a column)."""
    numbers = table.find(fields.column, fields.value, ignore_case=fields.ignore_case, where=where)
    first = numbers[0] if numbers else None
    shown = numbers[: fields.limit]
    return FoundRows(
        found=first is not None,
        count=len(numbers),
        first=table.record(table.cells(first)) if first is not None else None,
        first_row_number=first,
        rows=[table.record(table.cells(n)) for n in shown],
        row_numbers=shown,
    )


def append(table: Table, fields: AppendFields, where: str) -> tuple[RowWrite, AppendedRow]:
    """The write that appends the row, and the step's output once it is written."""
    write = plan_append(table, fields.row, add_columns=fields.add_columns, where=where)
    out = AppendedRow(
        row_number=write.number,
        row=write.merged(table),
        added_columns=write.added,
        created=write.created,
    )
    return write, out


@dataclass
class Update:
    """What an update step writes (None: nothing) and its output once written."""

    write: RowWrite | None
    output: UpdatedRow


def update(table: Table, fields: UpdateFields, where: str) -> Update:
    """Change the given columns of the row found by number or by lookup."""
    if fields.row_number is not None:
        numbers = [fields.row_number]
    elif not table.header.names:  # an empty sheet has no row to find
        numbers = []
    else:
        assert fields.column is not None
        numbers = table.find(
            fields.column, fields.value, ignore_case=fields.ignore_case, where=where
        )
    if not numbers:
        return _missing(table, fields, where)
    write, changed = plan_update(
        table, numbers[0], fields.row, add_columns=fields.add_columns, where=where
    )
    output = UpdatedRow(
        result="updated",
        row_number=write.number,
        row=write.merged(table),
        changed=changed,
        matches=len(numbers),
    )
    return Update(write, output)


def _missing(table: Table, fields: UpdateFields, where: str) -> Update:
    assert fields.column is not None
    if fields.if_missing == "fail":
        raise PermanentError(
            f"{where} has no row where {fields.column} is {text_of(fields.value)!r}; set "
            "if_missing: skip or append to go on without one"
        )
    if fields.if_missing == "skip":
        skipped = UpdatedRow(result="skipped", row_number=None, row=None, changed=[], matches=0)
        return Update(None, skipped)
    found = table.header.find(fields.column)
    name = fields.column if found is None else table.header.names[found]
    row = {name: fields.value, **{k: v for k, v in fields.row.items() if k != name}}
    write = plan_append(table, row, add_columns=fields.add_columns, where=where)
    appended = UpdatedRow(
        result="appended",
        row_number=write.number,
        row=write.merged(table),
        changed=[c for c, v in write.merged(table).items() if text_of(v)],
        matches=0,
    )
    return Update(write, appended)
