"""The spreadsheet app on real files: a zap appending follow-ups to a workbook, finding and
updating rows by column name in .xlsx and .csv, the polling trigger noticing new and changed
rows, and the promises about writing: runs (threads, processes) appending at once all land,
a writer killed mid-write leaves the old file whole, and LibreOffice opens what we wrote."""

from __future__ import annotations

import asyncio
import csv
import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import libreoffice
import pytest
from openpyxl import Workbook, load_workbook
from openpyxl.styles import Font
from pydantic import BaseModel, ValidationError
from waiting import until

from connectors import ActionContext, registry
from connectors._errors import PermanentError, RetryableError
from connectors._sheets.table import Table, row_changes
from connectors.spreadsheet import files
from connectors.spreadsheet.connection import SpreadsheetConnection
from connectors.spreadsheet.triggers import NewOrUpdatedRowOptions, new_or_updated_row
from flows.errors import ZapValidationError
from flows.events import Event
from flows.intake.db import events
from flows.intake.inbox import Inbox
from flows.intake.pollers import Pollers
from flows.loader import load_zap_text
from flows.plan import plan_of
from flows.runtime import ZapRun

if TYPE_CHECKING:
    from inbox_fixtures import Backend

pytest_plugins = ["inbox_fixtures"]

ROOT = Path(__file__).parent.parent
FORMATS = ["xlsx", "csv"]

# --------------------------------------------------------------------------- helpers


def context(folder: Path | None = None) -> ActionContext:
    connection = SpreadsheetConnection(folder=str(folder)) if folder else None
    return ActionContext(
        zap_id="follow-ups",
        step_id="log",
        run_id="r",
        event_id="e",
        connection=connection,
        connection_name="files" if folder else None,
    )


async def call(name: str, data: dict[str, Any], folder: Path | None = None) -> Any:
    """Run ``spreadsheet.<name>`` as the engine does: validate the input, run the action."""
    action = registry.action(f"spreadsheet.{name}")
    out = await action.run(action.input_model.model_validate(data), context(folder))
    assert isinstance(out, action.output_model)
    return out


def dumped(out: BaseModel) -> dict[str, Any]:
    return out.model_dump(mode="json")


def cells(path: Path, sheet: str | None = None) -> list[list[Any]]:
    """Every row of the file as a list of cells, read without zapflow."""
    if path.suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as handle:
            return list(csv.reader(handle))
    book = load_workbook(path)
    found = book[sheet] if sheet else book.worksheets[0]
    return [list(r) for r in found.iter_rows(values_only=True)]


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder of files, which is also the folder zapflow runs in."""
    where = tmp_path / "sheets"
    where.mkdir()
    monkeypatch.chdir(where)
    return where


# --------------------------------------------------------------------------- a zap


FOLLOW_UP_ZAP = """
zap: missed-call-log
trigger:
  app: builtin
  event: catch_hook
steps:
  - id: log
    action: spreadsheet.append_row
    input:
      file: follow-ups.xlsx
      row:
        Case: "{{ trigger.displayCaseNumber }}"
        Customer: "{{ trigger.visitorName }}"
        Missed at: "{{ trigger.date }}"
        Calls: "{{ trigger.calls }}"
  - id: check
    action: spreadsheet.find_rows
    input: {file: follow-ups.xlsx, column: Case, value: "{{ trigger.displayCaseNumber }}"}
"""


async def test_a_zap_appends_one_row_per_event_under_a_header_it_creates(folder: Path) -> None:
    zap = load_zap_text(FOLLOW_UP_ZAP)
    for case, name, calls in (("HK-1042", "Chan Tai Man", 2), ("HK-1043", "陳小明", 1)):
        payload = {
            "displayCaseNumber": case,
            "visitorName": name,
            "date": "2026-11-25 09:30",
            "calls": calls,
        }
        outcome = await ZapRun(
            plan_of(zap), Event(app="builtin", trigger="catch_hook", payload=payload)
        ).execute()
        assert outcome.status == "completed", outcome.message
        log, check = outcome.outputs["log"], outcome.outputs["check"]
        assert check["first"]["Customer"] == name and check["count"] == 1
    assert log["row_number"] == 3 and log["created"] is False
    assert cells(folder / "follow-ups.xlsx") == [
        ["Case", "Customer", "Missed at", "Calls"],
        ["HK-1042", "Chan Tai Man", "2026-11-25 09:30", 2],
        ["HK-1043", "陳小明", "2026-11-25 09:30", 1],
    ]


def test_a_step_with_a_mistyped_action_or_bad_file_is_refused_at_load_time() -> None:
    step = (
        "  - id: log\n    action: spreadsheet.append_row\n"
        "    input: {file: follow-ups.xls, row: {Case: x}}\n"
    )
    text = "zap: z\ntrigger: {app: builtin, event: catch_hook}\nsteps:\n" + step
    with pytest.raises(ZapValidationError) as info:
        load_zap_text(text, "z.yaml")
    assert "a file ending in .xlsx or .csv" in str(info.value)


async def test_a_step_with_a_connection_works_in_its_folder(
    tmp_path: Path, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    monkeypatch.setenv("ZAPFLOW_SPREADSHEET_TEAM_FOLDER", str(shared))
    text = (
        "zap: z\ntrigger: {app: builtin, event: catch_hook}\nsteps:\n"
        "  - id: log\n    action: spreadsheet.append_row\n    connection: team\n"
        "    input: {file: calls.csv, row: {Case: '{{ trigger.id }}'}}\n"
    )
    event = Event(app="builtin", trigger="catch_hook", payload={"id": "HK-1"})
    outcome = await ZapRun(plan_of(load_zap_text(text)), event).execute()
    assert outcome.status == "completed", outcome.message
    assert cells(shared / "calls.csv") == [["Case"], ["HK-1"]]
    assert not (folder / "calls.csv").exists()


# --------------------------------------------------------------------------- append_row


@pytest.mark.parametrize("kind", FORMATS)
async def test_append_fills_columns_by_header_name_in_any_order(kind: str, folder: Path) -> None:
    first = await call(
        "append_row", {"file": f"log.{kind}", "row": {"Case": "A", "Status": "open"}}
    )
    assert dumped(first) == {
        "row_number": 2,
        "row": {"Case": "A", "Status": "open"},
        "added_columns": [],
        "created": True,
    }
    second = await call(
        "append_row", {"file": f"log.{kind}", "row": {" status ": "new", "CASE": "B"}}
    )
    assert second.row_number == 3 and second.row == {"Case": "B", "Status": "new"}
    only = await call("append_row", {"file": f"log.{kind}", "row": {"Status": "no case yet"}})
    assert only.row == {"Case": None, "Status": "no case yet"}
    assert [r[:2] for r in cells(folder / f"log.{kind}")][1:] == [
        ["A", "open"],
        ["B", "new"],
        [None if kind == "xlsx" else "", "no case yet"],
    ]


@pytest.mark.parametrize("kind", FORMATS)
async def test_an_unknown_column_is_refused_naming_the_sheets_columns(
    kind: str, folder: Path
) -> None:
    await call("append_row", {"file": f"log.{kind}", "row": {"Case": "A", "Status": "open"}})
    with pytest.raises(PermanentError) as info:
        await call("append_row", {"file": f"log.{kind}", "row": {"Case": "B", "Stauts": "x"}})
    message = str(info.value)
    assert "no column 'Stauts' (did you mean 'Status'?); its columns: Case, Status" in message
    assert "add_columns: true" in message
    assert len(cells(folder / f"log.{kind}")) == 2  # nothing written


@pytest.mark.parametrize("kind", FORMATS)
async def test_add_columns_extends_the_header(kind: str, folder: Path) -> None:
    await call("append_row", {"file": f"log.{kind}", "row": {"Case": "A"}})
    out = await call(
        "append_row",
        {"file": f"log.{kind}", "row": {"Case": "B", "Agent": "Mei"}, "add_columns": True},
    )
    assert out.added_columns == ["Agent"] and out.row == {"Case": "B", "Agent": "Mei"}
    assert cells(folder / f"log.{kind}")[0] == ["Case", "Agent"]


async def test_a_row_goes_under_the_last_filled_row_of_a_workbook_made_elsewhere(
    folder: Path,
) -> None:
    book = Workbook()
    sheet = book.active
    sheet.append(["Case", "Total", "Due"])
    sheet.append(["A", 10, None])
    sheet.append(["B", 20, None])
    sheet["B4"] = "=SUM(B2:B3)"
    sheet["A1"].font = Font(bold=True)
    sheet.cell(40, 1).font = Font(italic=True)  # formatted but empty rows below
    book.create_sheet("Notes")["A1"] = "keep me"
    book.save(folder / "book.xlsx")

    out = await call(
        "append_row",
        {"file": "book.xlsx", "row": {"Case": "C", "Total": 5, "Due": date(2026, 12, 1)}},
    )
    assert out.row_number == 5
    again = load_workbook(folder / "book.xlsx")
    sheet = again.worksheets[0]
    assert sheet["B4"].value == "=SUM(B2:B3)" and sheet["A1"].font.bold
    assert [c.value for c in sheet[5]] == ["C", 5, datetime(2026, 12, 1)]
    assert again["Notes"]["A1"].value == "keep me"


async def test_text_that_looks_like_a_formula_is_written_as_text(folder: Path) -> None:
    await call("append_row", {"file": "log.xlsx", "row": {"Note": '=HYPERLINK("http://x")'}})
    cell = load_workbook(folder / "log.xlsx").worksheets[0]["A2"]
    assert cell.data_type == "s" and cell.value == '=HYPERLINK("http://x")'


async def test_control_characters_xlsx_cannot_hold_are_dropped(folder: Path) -> None:
    out = await call("append_row", {"file": "log.xlsx", "row": {"Note": "bell\x07 here"}})
    assert out.row_number == 2
    assert cells(folder / "log.xlsx")[1] == ["bell here"]


async def test_a_named_sheet_is_created_when_missing_and_others_are_kept(folder: Path) -> None:
    await call("append_row", {"file": "book.xlsx", "row": {"Case": "A"}})
    out = await call("append_row", {"file": "book.xlsx", "sheet": "December", "row": {"Case": "B"}})
    assert out.created and out.row_number == 2
    assert load_workbook(folder / "book.xlsx").sheetnames == ["Sheet1", "December"]
    assert cells(folder / "book.xlsx", "December") == [["Case"], ["B"]]
    found = await call("find_rows", {"file": "book.xlsx", "sheet": "December"})
    assert found.rows == [{"Case": "B"}]


async def test_a_csv_keeps_its_delimiter_byte_order_mark_and_line_ends(folder: Path) -> None:
    (folder / "excel.csv").write_bytes("\ufeffCase;Name\r\nA;Chan\r\n".encode())
    await call("append_row", {"file": "excel.csv", "row": {"Name": "陳; 大文", "Case": "B"}})
    assert (folder / "excel.csv").read_bytes().decode() == (
        '\ufeffCase;Name\r\nA;Chan\r\nB;"陳; 大文"\r\n'
    )
    found = await call("find_rows", {"file": "excel.csv", "column": "Case", "value": "A"})
    assert found.first == {"Case": "A", "Name": "Chan"}


# --------------------------------------------------------------------------- find_rows


@pytest.fixture(params=FORMATS)
async def calls(request: pytest.FixtureRequest, folder: Path) -> str:
    """A file of calls, in each format."""
    name = f"calls.{request.param}"
    for case, agent, minutes in (("HK-1", "Mei", 3), ("HK-2", "Ken", 12), ("HK-3", "mei", 7.5)):
        await call(
            "append_row", {"file": name, "row": {"Case": case, "Agent": agent, "Minutes": minutes}}
        )
    return name


async def test_find_rows_gives_the_matching_rows_and_the_first_on_its_own(calls: str) -> None:
    found = await call("find_rows", {"file": calls, "column": "Agent", "value": "Mei"})
    assert found.count == 1 and found.first_row_number == 2
    assert found.first["Case"] == "HK-1" and found.row_numbers == [2]
    loose = await call(
        "find_rows", {"file": calls, "column": "agent", "value": "MEI", "ignore_case": True}
    )
    assert loose.row_numbers == [2, 4]


async def test_numbers_match_as_numbers_whatever_their_spelling(calls: str) -> None:
    for value in (12, "12", "12.0", 12.0, " 12 "):
        found = await call("find_rows", {"file": calls, "column": "Minutes", "value": value})
        assert found.row_numbers == [3], value
    for code in ("012", "+12"):  # codes, not amounts
        found = await call("find_rows", {"file": calls, "column": "Minutes", "value": code})
        assert found.count == 0, code
    found = await call("find_rows", {"file": calls, "column": "Minutes", "value": 7.5})
    assert found.first["Case"] == "HK-3"


async def test_no_match_is_not_an_error(calls: str) -> None:
    found = await call("find_rows", {"file": calls, "column": "Case", "value": "HK-9"})
    assert dumped(found) == {
        "found": False,
        "count": 0,
        "first": None,
        "first_row_number": None,
        "rows": [],
        "row_numbers": [],
    }


async def test_without_a_column_every_row_comes_up_to_the_limit(calls: str) -> None:
    found = await call("find_rows", {"file": calls, "limit": 2})
    assert found.count == 3 and found.row_numbers == [2, 3]


async def test_find_rows_names_what_is_missing(calls: str, folder: Path) -> None:
    with pytest.raises(PermanentError, match=r"no column 'Agnet' \(did you mean 'Agent'\?\)"):
        await call("find_rows", {"file": calls, "column": "Agnet", "value": "x"})
    with pytest.raises(PermanentError, match="does not exist"):
        await call("find_rows", {"file": "nothing-here.xlsx"})
    if calls.endswith(".xlsx"):
        with pytest.raises(PermanentError, match=r"no sheet 'Nope'; its sheets: Sheet1"):
            await call("find_rows", {"file": calls, "sheet": "Nope"})
    else:
        with pytest.raises(PermanentError, match="CSV file, which has no sheets"):
            await call("find_rows", {"file": calls, "sheet": "Nope"})


async def test_a_file_that_is_not_a_workbook_is_a_clear_permanent_error(folder: Path) -> None:
    (folder / "broken.xlsx").write_text("not a zip")
    with pytest.raises(PermanentError, match="broken.xlsx is not an .xlsx workbook"):
        await call("find_rows", {"file": "broken.xlsx"})
    with pytest.raises(PermanentError, match="broken.xlsx is not an .xlsx workbook"):
        await call("append_row", {"file": "broken.xlsx", "row": {"A": 1}})
    assert (folder / "broken.xlsx").read_text() == "not a zip"


# --------------------------------------------------------------------------- update_row


async def test_update_changes_only_the_given_columns_of_the_found_row(calls: str) -> None:
    out = await call(
        "update_row",
        {"file": calls, "column": "Case", "value": "HK-2", "row": {"Agent": "Ken", "Minutes": 15}},
    )
    assert out.result == "updated" and out.row_number == 3 and out.matches == 1
    assert out.changed == ["Minutes"]
    found = await call("find_rows", {"file": calls, "column": "Case", "value": "HK-2"})
    assert found.first["Agent"] == "Ken" and str(found.first["Minutes"]) == "15"
    others = await call("find_rows", {"file": calls, "column": "Case", "value": "HK-3"})
    assert others.first["Agent"] == "mei"


async def test_update_by_row_number_and_with_a_new_column(calls: str) -> None:
    out = await call(
        "update_row",
        {"file": calls, "row_number": 4, "row": {"Outcome": "called back"}, "add_columns": True},
    )
    assert out.row["Outcome"] == "called back" and out.row["Case"] == "HK-3"
    found = await call("find_rows", {"file": calls, "column": "Outcome", "value": "called back"})
    assert found.row_numbers == [4]


async def test_update_of_a_missing_row_fails_skips_or_appends(calls: str) -> None:
    lookup = {"file": calls, "column": "Case", "value": "HK-9", "row": {"Agent": "Ann"}}
    with pytest.raises(PermanentError, match="no row where Case is 'HK-9'; set if_missing"):
        await call("update_row", lookup)
    skipped = await call("update_row", {**lookup, "if_missing": "skip"})
    assert skipped.result == "skipped" and skipped.row_number is None
    appended = await call("update_row", {**lookup, "if_missing": "append"})
    assert appended.result == "appended" and appended.row_number == 5
    assert appended.row == {"Case": "HK-9", "Agent": "Ann", "Minutes": None}


async def test_update_keeps_formulas_and_formatting_of_the_other_cells(folder: Path) -> None:
    book = Workbook()
    sheet = book.active
    sheet.append(["Case", "Total", "Double"])
    sheet.append(["A", 10, "=B2*2"])
    sheet["A2"].font = Font(bold=True)
    book.save(folder / "book.xlsx")
    await call("update_row", {"file": "book.xlsx", "row_number": 2, "row": {"Total": 11}})
    sheet = load_workbook(folder / "book.xlsx").active
    assert [c.value for c in sheet[2]] == ["A", 11, "=B2*2"] and sheet["A2"].font.bold


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"file": "a.xls", "row": {"A": 1}}, "a file ending in .xlsx or .csv"),
        ({"file": "a.csv", "row": {}}, "give at least one column"),
        ({"file": "a.csv", "row": {" ": 1}}, "a column name may not be empty"),
        ({"file": "a.csv", "row": {"A": [1, 2]}}, "row.A"),
    ],
)
def test_bad_append_inputs_are_refused_naming_the_field(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        registry.action("spreadsheet.append_row").input_model.model_validate(data)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"row": {"A": 1}}, "give row_number, or column and value (not both)"),
        ({"row_number": 2, "column": "A", "row": {"A": 1}}, "(not both)"),
        ({"row_number": 1, "row": {"A": 1}}, "greater than or equal to 2"),
        ({"row_number": 2, "if_missing": "append", "row": {"A": 1}}, "needs column and value"),
    ],
)
def test_bad_update_inputs_are_refused(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        registry.action("spreadsheet.update_row").input_model.model_validate(
            {"file": "a.xlsx", **data}
        )
    assert message in str(info.value)


# --------------------------------------------------------------------------- paths


async def test_paths_are_taken_from_the_connections_folder_and_stay_in_it(tmp_path: Path) -> None:
    root = tmp_path / "files"
    (root / "exports").mkdir(parents=True)
    await call("append_row", {"file": "exports/calls.csv", "row": {"Case": "A"}}, folder=root)
    assert (root / "exports" / "calls.csv").exists()
    for outside in ("../secret.csv", str(tmp_path / "elsewhere.csv")):
        with pytest.raises(PermanentError, match="outside the connection's folder"):
            await call("append_row", {"file": outside, "row": {"Case": "A"}}, folder=root)
    with pytest.raises(PermanentError, match="the folder of .* does not exist"):
        await call("append_row", {"file": "missing/calls.csv", "row": {"Case": "A"}}, folder=root)


async def test_the_connection_check_wants_a_writable_folder(tmp_path: Path) -> None:
    check = registry.app("spreadsheet").check
    assert check is not None
    note = await check(SpreadsheetConnection(folder=str(tmp_path)), "files")
    assert "is there and writable" in note
    with pytest.raises(PermanentError, match="does not exist"):
        await check(SpreadsheetConnection(folder=str(tmp_path / "nope")), "files")


# --------------------------------------------------------------------------- writing safely


async def _append_many(name: str, writer: str, count: int) -> None:
    for i in range(count):
        await call("append_row", {"file": name, "row": {"Writer": writer, "N": i}})


def _appender_script(folder: Path, name: str, writer: str, count: int) -> str:
    return textwrap.dedent(
        f"""
        import asyncio, os, sys
        sys.path.insert(0, {str(ROOT)!r})
        os.chdir({str(folder)!r})
        from connectors import ActionContext, registry
        action = registry.action("spreadsheet.append_row")
        ctx = ActionContext("z", "s", "r", "e")
        async def main():
            for i in range({count}):
                data = {{"file": {name!r}, "row": {{"Writer": {writer!r}, "N": i}}}}
                await action.run(action.input_model.model_validate(data), ctx)
                print(i, flush=True)
        asyncio.run(main())
        """
    )


def _rows_by_writer(path: Path) -> Counter[tuple[str, str]]:
    rows = cells(path)[1:]
    return Counter((str(r[0]), str(r[1])) for r in rows)


@pytest.mark.parametrize("kind", FORMATS)
def test_threads_and_processes_appending_at_once_each_land_once(kind: str, folder: Path) -> None:
    name = f"busy.{kind}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _appender_script(folder, name, f"proc{p}", 15)],
            stdout=subprocess.DEVNULL,
        )
        for p in range(2)
    ]
    threads = [
        threading.Thread(target=asyncio.run, args=(_append_many(name, f"thread{t}", 15),))
        for t in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    seen = _rows_by_writer(folder / name)
    writers = [f"thread{t}" for t in range(4)] + [f"proc{p}" for p in range(2)]
    assert seen == Counter({(w, str(i)): 1 for w in writers for i in range(15)})
    assert cells(folder / name)[0] == ["Writer", "N"]
    assert not list(folder.glob(f".{name}.*.tmp"))


def test_a_writer_killed_mid_write_leaves_the_old_file_whole(folder: Path) -> None:
    """The temp-and-replace path: a writer is killed with half the new file written."""
    asyncio.run(_append_many("log.xlsx", "before", 3))
    before = (folder / "log.xlsx").read_bytes()
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from connectors.spreadsheet import files
        def write(handle):
            handle.write(b"PK half a workbook")
            handle.flush()
            print("writing", flush=True)
            time.sleep(60)
        path = Path({str(folder / "log.xlsx")!r})
        with files.locked(path):
            files.replace_atomically(path, write)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "writing\n"
    assert list(folder.glob(".log.xlsx.*.tmp"))  # the new version, half written
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)

    assert (folder / "log.xlsx").read_bytes() == before
    asyncio.run(_append_many("log.xlsx", "after", 1))  # the lock died with the writer
    assert [r[0] for r in cells(folder / "log.xlsx")[1:]] == ["before"] * 3 + ["after"]
    assert not list(folder.glob(".log.xlsx.*.tmp"))  # its leftover is cleared


def test_killing_a_busy_appender_at_random_moments_never_breaks_the_file(folder: Path) -> None:
    asyncio.run(_append_many("big.xlsx", "seed", 1))
    book = load_workbook(folder / "big.xlsx")
    for i in range(3000):  # big enough that a save takes a while
        book.active.append(["seed", i])
    book.save(folder / "big.xlsx")
    for attempt in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-c", _appender_script(folder, "big.xlsx", f"w{attempt}", 1000)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        proc.stdout.readline()  # it has appended once: it is in its loop now
        time.sleep(0.05 + 0.07 * attempt)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        rows = cells(folder / "big.xlsx")[1:]  # a valid workbook every time
        mine = [int(r[1]) for r in rows if r[0] == f"w{attempt}"]
        assert mine == list(range(len(mine))) and mine, attempt  # whole rows, in order


def test_a_file_locked_too_long_is_a_retryable_error(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asyncio.run(_append_many("log.csv", "a", 1))
    monkeypatch.setattr(files, "LOCK_TIMEOUT", 0.3)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time\n"
            f"h = open({str(files.lock_path(folder / 'log.csv'))!r}, 'a+b')\n"
            "fcntl.flock(h, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(RetryableError, match="being written by another run"):
            asyncio.run(_append_many("log.csv", "b", 1))
    finally:
        holder.kill()
        holder.wait()
    asyncio.run(_append_many("log.csv", "b", 1))
    assert [r[0] for r in cells(folder / "log.csv")] == ["Writer", "a", "b"]
    assert fcntl  # the lock is an OS lock other programs can take too


# --------------------------------------------------------------------------- LibreOffice


@pytest.fixture(scope="session")
def soffice() -> str:
    try:
        return libreoffice.install()
    except RuntimeError as exc:
        pytest.skip(str(exc))


def test_a_workbook_zapflow_wrote_opens_in_libreoffice(
    soffice: str, folder: Path, tmp_path: Path
) -> None:
    rows = [
        {"Case": "HK-1042", "Customer": "陳大文", "Calls": 2, "Due": date(2026, 12, 1)},
        {"Case": "HK-1043", "Customer": "Ann, O'Neil", "Calls": 1.5, "Note": "=1+1"},
    ]
    for row in rows:
        asyncio.run(
            call("append_row", {"file": "follow-ups.xlsx", "row": row, "add_columns": True})
        )
    asyncio.run(
        call("update_row", {"file": "follow-ups.xlsx", "row_number": 2, "row": {"Calls": 3}})
    )
    out = tmp_path / "converted"
    out.mkdir()
    converted = libreoffice.to_csv(soffice, folder / "follow-ups.xlsx", out)
    with open(converted, encoding="utf-8", newline="") as handle:
        table = list(csv.reader(handle))
    assert table[0] == ["Case", "Customer", "Calls", "Due", "Note"]
    assert table[1][:3] == ["HK-1042", "陳大文", "3"] and table[1][3] in ("12/01/26", "2026-12-01")
    assert table[2] == ["HK-1043", "Ann, O'Neil", "1.5", "", "=1+1"]


# --------------------------------------------------------------------------- the trigger


def _table(*rows: list[Any]) -> Table:
    return Table.of([["Case", "Status", "Notes"], *rows])


def _changes(table: Table, cursor: dict[str, Any] | None, **kw: Any) -> tuple[list[Any], Any]:
    found = row_changes(
        table,
        cursor,
        key_column=kw.get("key_column", "Case"),
        watch_columns=kw.get("watch_columns", []),
        where="calls.xlsx",
    )
    return [(k, p["change"], p["row_number"]) for k, p in found.items], found.cursor


def test_new_and_changed_rows_each_make_one_item_with_a_key_of_their_own() -> None:
    items, cursor = _changes(_table(["A", "open"], ["B", "open"]), None)
    assert items == [("A#1", "new", 2), ("B#2", "new", 3)]
    assert _changes(_table(["A", "open"], ["B", "open"]), cursor)[0] == []
    items, later = _changes(_table(["A", "open"], ["B", "done"], ["C", "open"]), cursor)
    assert items == [("B#3", "updated", 3), ("C#4", "new", 4)]
    # The same poll repeated from the same cursor (a crash before it was kept) keys the same.
    assert _changes(_table(["A", "open"], ["B", "done"], ["C", "open"]), cursor)[0] == items
    # Changed back, or deleted and added again: a change all the same.
    items, _ = _changes(_table(["A", "open"], ["B", "open"]), later)
    assert items == [("B#5", "updated", 3)]


def test_rows_are_matched_by_key_wherever_they_move() -> None:
    _, cursor = _changes(_table(["A", "open"], ["B", "open"]), None)
    items, _ = _changes(_table(["B", "open"], ["A", "open"]), cursor)
    assert items == []
    by_number, cursor = _changes(_table(["A", "open"], ["B", "open"]), None, key_column=None)
    assert [k for k, *_ in by_number] == ["2#1", "3#2"]
    items, _ = _changes(_table(["B", "open"], ["A", "open"]), cursor, key_column=None)
    assert [k for k, *_ in items] == ["2#3", "3#4"]


def test_empty_keys_wait_and_repeated_keys_are_told_apart() -> None:
    items, cursor = _changes(_table(["", "typing…"], [], ["A", "x"], ["A", "y"]), None)
    assert [k for k, *_ in items] == ["A#1", "A (2)#2"]
    items, _ = _changes(_table(["C", "typing…"], [], ["A", "x"], ["A", "y"]), cursor)
    assert items == [("C#3", "new", 2)]


def test_watch_columns_ignore_changes_elsewhere_and_new_empty_columns_change_nothing() -> None:
    _, cursor = _changes(_table(["A", "open", ""]), None, watch_columns=["Status"])
    assert _changes(_table(["A", "open", "note"]), cursor, watch_columns=["Status"])[0] == []
    assert _changes(_table(["A", "done", "note"]), cursor, watch_columns=["Status"])[0] != []
    _, cursor = _changes(_table(["A", "open"]), None)
    wider = Table.of([["Case", "Status", "Notes", "New"], ["A", "open"]])
    assert _changes(wider, cursor)[0] == []


async def test_the_trigger_reads_the_file_and_names_a_missing_key_column(folder: Path) -> None:
    await call("append_row", {"file": "calls.csv", "row": {"Case": "A", "Status": "open"}})
    options = NewOrUpdatedRowOptions(file="calls.csv", key_column="Case")
    found = await new_or_updated_row(None, options, None)
    assert found.items == [
        (
            "A#1",
            {"change": "new", "row_number": 2, "key": "A", "row": {"Case": "A", "Status": "open"}},
        )
    ]
    wrong = NewOrUpdatedRowOptions(file="calls.csv", key_column="Id")
    with pytest.raises(PermanentError, match="calls.csv has no column 'Id'"):
        await new_or_updated_row(None, wrong, None)


def _poll_zap(folder: Path) -> Any:
    trigger = {
        "app": "spreadsheet",
        "event": "new_or_updated_row",
        "options": {"file": str(folder / "cases.xlsx"), "key_column": "Case", "interval": "50ms"},
    }
    step = {"id": "n", "action": "builtin.lookup", "input": {"key": "a", "table": {"a": 1}}}
    return load_zap_text(json.dumps({"zap": "case-watch", "trigger": trigger, "steps": [step]}))


async def _payloads(inbox: Inbox) -> list[dict[str, Any]]:
    import sqlalchemy as sa

    async with inbox.engine.connect() as conn:
        rows = (await conn.execute(sa.select(events).order_by(events.c.seq))).all()
    return [r.payload for r in rows]


async def test_serve_runs_the_zap_once_per_new_or_changed_row(
    folder: Path, backend: Backend
) -> None:
    inbox = await backend.open()
    await call("append_row", {"file": "cases.xlsx", "row": {"Case": "A", "Status": "open"}})
    said: list[str] = []
    pollers = Pollers(inbox, min_interval=0.01, report=said.append)
    pollers.update([_poll_zap(folder)])
    await until(lambda: any("first poll noted 1 item" in s for s in said))

    await call("append_row", {"file": "cases.xlsx", "row": {"Case": "B", "Status": "open"}})
    await until(lambda: _payloads(inbox))
    await call(
        "update_row",
        {"file": "cases.xlsx", "column": "Case", "value": "A", "row": {"Status": "called back"}},
    )
    await until(lambda: _has(inbox, 2))
    await asyncio.sleep(0.3)  # more polls: nothing more
    await pollers.stop()
    got = [(p["change"], p["key"], p["row"]["Status"]) for p in await _payloads(inbox)]
    assert got == [("new", "B", "open"), ("updated", "A", "called back")]


async def _has(inbox: Inbox, count: int) -> bool:
    return len(await _payloads(inbox)) >= count


def test_the_app_is_listed_with_its_steps() -> None:
    app = registry.app("spreadsheet")
    assert set(app.actions) == {"append_row", "find_rows", "update_row"}
    assert app.triggers["new_or_updated_row"].kind == "polling"
    assert not app.actions["find_rows"].side_effects
    assert os.path.exists(ROOT / "docs" / "apps" / "spreadsheet.md")
