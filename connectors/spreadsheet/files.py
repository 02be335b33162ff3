"""Local .xlsx and .csv files: reading a sheet, and writing one safely.

A write is atomic: the new file is written next to the old one, flushed to disk, and put in
its place with ``os.replace``, so a reader (or a crash) sees the old file or the new one, never
half of one. A write is also alone: the whole read-modify-write holds a lock on the file, an OS
lock (``flock``) on a side file ``.<name>.lock`` that other processes respect, and a thread
lock in this process, so two runs appending at once both land.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import os
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, TypeVar
from zipfile import BadZipFile

from connectors._errors import PermanentError, RetryableError
from connectors._sheets.table import HEADER_ROW, RowWrite, Table

if TYPE_CHECKING:  # openpyxl (~13 MB) is imported when a step first touches an .xlsx file, so
    # processes that only load zaps (the receiver) do not carry it
    from openpyxl import Workbook

LOCK_TIMEOUT = 30.0
FORMATS = (".xlsx", ".csv")
DELIMITERS = ",;\t|"

T = TypeVar("T")

_locks: dict[Path, threading.Lock] = {}
_locks_guard = threading.Lock()


def described(path: Path, sheet: str | None) -> str:
    """How messages name a sheet: the file, and the worksheet when there is one."""
    return f"{path.name} (sheet {sheet!r})" if sheet else path.name


# --------------------------------------------------------------------------- locking, replacing


def _thread_lock(path: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(path, threading.Lock())


def lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


@contextlib.contextmanager
def locked(path: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold the file's write lock, in this process and against other processes."""
    busy = RetryableError(
        f"{path.name} is being written by another run for more than {timeout:g} s; retried"
    )
    deadline = time.monotonic() + timeout
    mine = _thread_lock(path)
    if not mine.acquire(timeout=timeout):
        raise busy
    try:
        with open(lock_path(path), "a+b") as handle:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise busy from None
                    time.sleep(0.01)
            yield  # closing the handle releases the flock
    finally:
        mine.release()


def _new_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def replace_atomically(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write a new version of ``path`` with ``write(handle)`` and swap it in whole."""
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else _new_file_mode()
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)


def remove_leftovers(path: Path) -> None:
    """Delete temp files a killed writer left; only under the lock, when no write is going on."""
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()


# --------------------------------------------------------------------------- formats


class SheetFile(Protocol):
    """One sheet of a local file, loaded in memory."""

    table: Table

    def put(self, number: int, cells: dict[int, Any]) -> None: ...

    def save(self, handle: IO[bytes]) -> None: ...


def _cell(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.isoformat()  # Excel has no time zones: kept as text, not shifted
    if isinstance(value, str):
        from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

        return ILLEGAL_CHARACTERS_RE.sub("", value)  # control characters xlsx cannot hold
    return value


class XlsxSheet:
    def __init__(self, path: Path, sheet: str | None, *, create: bool) -> None:
        if path.exists():
            self.book = _open_book(path, read_only=False)
        elif create:
            from openpyxl import Workbook

            self.book = Workbook()
            self.book.worksheets[0].title = sheet or "Sheet1"
        else:
            raise PermanentError(f"{path} does not exist")
        self.sheet = _worksheet(self.book, sheet, path, create=create)
        self.table = Table.of(list(self.sheet.iter_rows(values_only=True)))

    def put(self, number: int, cells: dict[int, Any]) -> None:
        for index, value in cells.items():
            cell = self.sheet.cell(number, index + 1)
            cell.value = _cell(value)
            if isinstance(cell.value, str) and cell.data_type == "f":
                cell.data_type = "s"  # text from a trigger is text, never a formula

    def save(self, handle: IO[bytes]) -> None:
        self.book.save(handle)


def _open_book(path: Path, *, read_only: bool) -> Workbook:
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        return load_workbook(path, read_only=read_only, data_only=read_only)
    except (BadZipFile, InvalidFileException, KeyError, OSError) as exc:
        raise PermanentError(
            f"{path.name} is not an .xlsx workbook zapflow can read ({exc})"
        ) from None


def _worksheet(book: Workbook, name: str | None, path: Path, *, create: bool) -> Any:
    """The worksheet (a read-only one when the book was opened so)."""
    from openpyxl.chartsheet import Chartsheet

    if name is None:
        sheet = book.worksheets[0]
    elif name in book.sheetnames:
        sheet = book[name]
    elif create:
        sheet = book.create_sheet(name)
    else:
        raise PermanentError(
            f"{path.name} has no sheet {name!r}; its sheets: {', '.join(book.sheetnames)}"
        )
    if isinstance(sheet, Chartsheet):
        raise PermanentError(f"{path.name}: sheet {sheet.title!r} is a chart, not a worksheet")
    return sheet


class CsvSheet:
    def __init__(self, path: Path, *, create: bool) -> None:
        self.bom, self.delimiter, self.newline = False, ",", "\r\n"
        text = _read_text(path, create=create)
        if text:
            self.bom = text.startswith("\ufeff")
            text = text.removeprefix("\ufeff")
            first = text.splitlines()[0] if text.strip() else ""
            self.delimiter = max(DELIMITERS, key=first.count)  # "," when there is none
            self.newline = "\r\n" if "\r\n" in text else "\n"
        self.rows: list[list[Any]] = list(csv.reader(io.StringIO(text), delimiter=self.delimiter))
        self.table = Table.of(self.rows)

    def put(self, number: int, cells: dict[int, Any]) -> None:
        while len(self.rows) < number:
            self.rows.append([])
        row = self.rows[number - 1]
        for index, value in cells.items():
            row.extend([""] * (index + 1 - len(row)))
            row[index] = _csv_text(value)

    def save(self, handle: IO[bytes]) -> None:
        out = io.StringIO()
        writer = csv.writer(out, delimiter=self.delimiter, lineterminator=self.newline)
        width = len(self.rows[0]) if self.rows else 0
        writer.writerows(r + [""] * (width - len(r)) if r else r for r in self.rows)
        handle.write((("\ufeff" if self.bom else "") + out.getvalue()).encode("utf-8"))


def _read_text(path: Path, *, create: bool) -> str:
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            return handle.read()
    except FileNotFoundError:
        if create:
            return ""
        raise PermanentError(f"{path} does not exist") from None
    except UnicodeDecodeError:
        raise PermanentError(f"{path.name} is not UTF-8 text; save it as CSV UTF-8") from None


def _csv_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value)


# --------------------------------------------------------------------------- what steps call


def _is_csv(path: Path) -> bool:
    return path.suffix.lower() == ".csv"


def _load(path: Path, sheet: str | None, *, create: bool) -> SheetFile:
    if _is_csv(path):
        return CsvSheet(path, create=create)
    return XlsxSheet(path, sheet, create=create)


def read_table(path: Path, sheet: str | None) -> Table:
    """The sheet as it is now (no lock needed: files are only ever replaced whole)."""
    if _is_csv(path):
        return CsvSheet(path, create=False).table
    if not path.exists():
        raise PermanentError(f"{path} does not exist")
    book = _open_book(path, read_only=True)
    try:
        found = _worksheet(book, sheet, path, create=False)
        return Table.of(list(found.iter_rows(values_only=True)))
    finally:
        book.close()


def change(
    path: Path,
    sheet: str | None,
    plan: Callable[[Table], tuple[RowWrite | None, T]],
    *,
    create: bool,
) -> T:
    """Read the sheet, ask ``plan`` what to write, write it, and return what ``plan`` said the
    step's output is: all under the file's lock."""
    if not path.parent.is_dir():
        raise PermanentError(f"the folder of {path} does not exist")
    with locked(path):
        remove_leftovers(path)
        loaded = _load(path, sheet, create=create)
        write, output = plan(loaded.table)
        if write is None:
            return output
        if write.header is not None:
            loaded.put(HEADER_ROW, dict(enumerate(write.header)))
        loaded.put(write.number, write.cells)
        replace_atomically(path, loaded.save)
    return output
