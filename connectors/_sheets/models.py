"""The inputs, outputs and trigger payload the spreadsheet and Google Sheets apps share.

Each app adds where the sheet is (a file, a spreadsheet id) to these; what a step does with
the rows is written the same way in both.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

Cell = str | int | float | bool | datetime | date | None
"""What a step may write into a cell; dates and times go in as dates where the format has them."""


def _check_row(row: dict[str, Cell]) -> dict[str, Cell]:
    if not row:
        raise ValueError("give at least one column, e.g. {Case: '{{ trigger.id }}'}")
    blank = [name for name in row if not name.strip()]
    if blank:
        raise ValueError("a column name may not be empty")
    return row


RowValues = Annotated[dict[str, Cell], AfterValidator(_check_row)]

_ROW_HELP = (
    "Column (the header row's text) → value, e.g. {Case: '{{ trigger.displayCaseNumber }}', "
    "Status: open}; a name matches its header ignoring case and spaces around it"
)
_ADD_HELP = (
    "true: a column the header lacks is added at its end; false: the step fails naming the "
    "sheet's columns (so a typo never starts a new column)"
)
_COLUMN_HELP = "The column to look in (its header text)"
_VALUE_HELP = (
    "The value to look for: the whole cell, compared as text, or as numbers when both are "
    "plainly written numbers (42 matches 42.0, but 007 does not match 7)"
)


class _Fields(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AppendFields(_Fields):
    row: RowValues = Field(description=_ROW_HELP)
    add_columns: bool = Field(False, description=_ADD_HELP)


class FindFields(_Fields):
    column: str | None = Field(None, min_length=1, description=f"{_COLUMN_HELP}; none: every row")
    value: Cell = Field(None, description=_VALUE_HELP)
    ignore_case: bool = Field(False, description="Compare text ignoring upper and lower case")
    limit: int = Field(
        100, ge=1, le=1000, description="At most this many rows in `rows` (count counts all)"
    )

    @model_validator(mode="after")
    def _value_with_column(self) -> Self:
        if self.column is None and self.value is not None:
            raise ValueError("value needs a column to look in")
        return self


class UpdateFields(_Fields):
    row_number: int | None = Field(
        None,
        ge=2,
        description="The row to change, as numbered in the sheet (row 1 is the header); or "
        "give column and value to find it",
    )
    column: str | None = Field(
        None, min_length=1, description=f"{_COLUMN_HELP} to find the row to change"
    )
    value: Cell = Field(None, description=f"With column: {_VALUE_HELP.lower()}")
    ignore_case: bool = Field(False, description="Compare text ignoring upper and lower case")
    row: RowValues = Field(
        description=f"The columns to change; the others keep their values. {_ROW_HELP}"
    )
    add_columns: bool = Field(False, description=_ADD_HELP)
    if_missing: Literal["fail", "skip", "append"] = Field(
        "fail",
        description="When no row has the value: fail the step, skip (output result: skipped), "
        "or append a row with `row` and the looked-up column",
    )

    @model_validator(mode="after")
    def _one_way_to_find(self) -> Self:
        if (self.row_number is None) == (self.column is None):
            raise ValueError("give row_number, or column and value (not both)")
        if self.row_number is not None and self.if_missing == "append":
            raise ValueError("if_missing: append needs column and value, not row_number")
        return self


class WatchFields(_Fields):
    """The trigger's options about rows; each app's options add where the sheet is."""

    key_column: str | None = Field(
        None,
        min_length=1,
        description="The column that identifies a row (an id, a case number): a row is new when "
        "its key was not there before, changed when its values differ. None: rows are "
        "identified by row number (inserting or deleting a row then changes those below it)",
    )
    watch_columns: list[str] = Field(
        default_factory=list,
        description="Only a change in these columns counts; empty: any column",
    )


# --------------------------------------------------------------------------- outputs


class AppendedRow(BaseModel):
    row_number: int = Field(description="Where the row went (row 1 is the header)", examples=[7])
    row: dict[str, Any] = Field(
        description="The new row, every column of the header",
        examples=[{"Case": "HK-1042", "Status": "open", "Notes": None}],
    )
    added_columns: list[str] = Field(
        description="Columns added to the header for this row", examples=[[]]
    )
    created: bool = Field(
        description="Whether the header row was written first (a new file, sheet or an empty one)",
        examples=[False],
    )


class FoundRows(BaseModel):
    found: bool = Field(description="Whether any row matched", examples=[True])
    count: int = Field(description="How many rows matched", examples=[1])
    first: dict[str, Any] | None = Field(
        description="The first matching row (column → value), or null",
        examples=[{"Case": "HK-1042", "Status": "open"}],
    )
    first_row_number: int | None = Field(description="Its row number, or null", examples=[7])
    rows: list[dict[str, Any]] = Field(
        description="The matching rows, up to `limit`",
        examples=[[{"Case": "HK-1042", "Status": "open"}]],
    )
    row_numbers: list[int] = Field(description="Their row numbers", examples=[[7]])


class UpdatedRow(BaseModel):
    result: Literal["updated", "appended", "skipped"] = Field(
        description="What happened: updated a row, appended one (if_missing: append), or "
        "skipped (if_missing: skip)",
        examples=["updated"],
    )
    row_number: int | None = Field(description="The row changed or appended", examples=[7])
    row: dict[str, Any] | None = Field(
        description="That row after the change, every column",
        examples=[{"Case": "HK-1042", "Status": "called back"}],
    )
    changed: list[str] = Field(description="The columns whose value changed", examples=[["Status"]])
    matches: int = Field(
        description="How many rows matched the lookup (the first of them is changed)",
        examples=[1],
    )


class RowChange(BaseModel):
    """A row that is new or changed: the zap reads its cells as `trigger.row.<column>`
    (`trigger.row['Follow-up date']` for a name with spaces)."""

    change: Literal["new", "updated"] = Field(description="new or updated")
    row_number: int = Field(description="The row's number in the sheet (row 1 is the header)")
    key: str = Field(description="What identifies the row: its key_column's value, or its number")
    row: dict[str, Any] = Field(description="The row: column → value")


ROW_CHANGE_SAMPLE: dict[str, Any] = {
    "change": "new",
    "row_number": 7,
    "key": "HK-1042",
    "row": {"Case": "HK-1042", "Customer": "Chan Tai Man", "Status": "open"},
}
