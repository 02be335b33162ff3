"""A spreadsheet connection: the folder a zap's files are in.

Steps may run without one: a relative path is then taken from the folder zapflow was started
in (where its ``.zapflow`` state folder is). With a connection, relative paths are taken from
its folder and no path may lead out of it, so a zap file can only touch the files meant for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from connectors._errors import PermanentError
from connectors.spreadsheet.files import FORMATS


class SpreadsheetConnection(BaseModel):
    """The folder a zap's spreadsheet files are in."""

    model_config = ConfigDict(extra="forbid")

    folder: str = Field(
        min_length=1,
        description="The folder, e.g. /srv/zapflow/sheets or ~/Documents/sheets: steps' relative "
        "paths are taken from it, and no path may lead out of it",
    )

    def root(self) -> Path:
        return Path(self.folder).expanduser().resolve()


def _check_file(value: str) -> str:
    value = value.strip()
    if not value.lower().endswith(FORMATS):
        raise ValueError(
            f"a file ending in {' or '.join(FORMATS)} (the ending chooses the format), "
            f"got {value!r}"
        )
    return value


FileName = Annotated[str, AfterValidator(_check_file)]

FILE_HELP = (
    "The file, e.g. follow-ups.xlsx or exports/calls.csv: .xlsx or .csv (the ending chooses the "
    "format). A relative path is taken from the connection's folder, or without a connection "
    "from the folder zapflow runs in"
)
SHEET_HELP = "For .xlsx: the worksheet's name; default the first one"


def resolve(file: str, connection: SpreadsheetConnection | None) -> Path:
    """The absolute path a step's ``file`` names."""
    given = Path(file).expanduser()
    if connection is None:
        return (Path.cwd() / given).resolve()
    root = connection.root()
    full = (root / given).resolve()
    if not full.is_relative_to(root):
        raise PermanentError(
            f"file {file!r} is outside the connection's folder {root}: give a path inside it"
        )
    return full


def check_sheet(path: Path, sheet: str | None) -> str | None:
    if sheet is not None and path.suffix.lower() == ".csv":
        raise PermanentError(f"{path.name} is a CSV file, which has no sheets: leave sheet out")
    return sheet
