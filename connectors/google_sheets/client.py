"""Calling the Sheets API v4: reading values, appending rows, writing cells; each failure
turned into the engine's errors.

Google answers errors as ``{"error": {"code", "message", "status"}}``; its message and status
go into ours. 429 and 5xx are retried by the step's policy (honouring Retry-After), as are
timeouts and connection errors; 400, 403 and 404 fail at once; a 401 is tried once more with a
new token, then fails as an auth error.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import httpx

from connectors._clients import retry_after
from connectors._errors import AuthError, PermanentError, RetryableError
from connectors.google_sheets import auth
from connectors.google_sheets.connection import GoogleSheetsConnection

TIMEOUT = 30.0
RENDER = {"valueRenderOption": "UNFORMATTED_VALUE", "dateTimeRenderOption": "FORMATTED_STRING"}
"""Numbers as numbers, dates as the sheet shows them."""
_ROW = re.compile(r"![A-Z]+(\d+)(?::[A-Z]+(\d+))?$")


def quoted(title: str) -> str:
    """A sheet's title as A1 notation writes it: 'It''s here'."""
    return "'" + title.replace("'", "''") + "'"


def column_letters(index: int) -> str:
    """The A1 letters of a 0-based column: 0 → A, 26 → AA."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


def last_row(updated_range: str) -> int:
    """The last row number of a range such as 'Sheet1'!A5:C6."""
    found = _ROW.search(updated_range)
    if found is None:
        raise PermanentError(f"Google Sheets answered an unexpected range {updated_range!r}")
    return int(found.group(2) or found.group(1))


class Sheets:
    """One spreadsheet, through one connection."""

    def __init__(
        self, connection: GoogleSheetsConnection, name: str | None, spreadsheet_id: str
    ) -> None:
        self.connection, self.name, self.id = connection, name, spreadsheet_id
        self.base = f"{connection.api}/v4/spreadsheets/{spreadsheet_id}"

    async def title(self, sheet: str | None) -> str:
        """The sheet's title: the one given, else the spreadsheet's first sheet."""
        if sheet is not None:
            return sheet
        meta = await self._call(
            "GET", "", "reading the sheet names", {"fields": "sheets.properties"}
        )
        sheets = meta.get("sheets") or [{}]
        return str(sheets[0].get("properties", {}).get("title", "Sheet1"))

    async def values(self, range_: str) -> list[list[Any]]:
        got = await self._call(
            "GET", f"/values/{quote(range_, safe='')}", f"reading {range_}", RENDER
        )
        return list(got.get("values", []))

    async def append(self, range_: str, rows: list[list[Any]], value_input: str) -> int:
        """Append rows after the table at ``range_``; the last appended row's number."""
        params = {"valueInputOption": value_input, "insertDataOption": "INSERT_ROWS"}
        body = {"range": range_, "majorDimension": "ROWS", "values": rows}
        path = f"/values/{quote(range_, safe='')}:append"
        got = await self._call("POST", path, f"appending to {range_}", params, body)
        return last_row(str(got.get("updates", {}).get("updatedRange", "")))

    async def write(self, cells: dict[str, Any], value_input: str) -> None:
        """Write single cells, by A1 range, in one request."""
        data = [{"range": r, "majorDimension": "ROWS", "values": [[v]]} for r, v in cells.items()]
        body = {"valueInputOption": value_input, "data": data}
        await self._call("POST", "/values:batchUpdate", "writing cells", None, body)

    async def _call(
        self,
        method: str,
        path: str,
        what: str,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        what = f"Google Sheets, {what} of spreadsheet {self.id}"
        key = self.connection.key
        client = auth.clients.get("google-sheets", httpx.AsyncClient)
        for attempt in (1, 2):
            token = await auth.access_token(key, self.name)
            headers = {"Authorization": f"Bearer {token}"}
            try:
                reply = await client.request(
                    method,
                    self.base + path,
                    params=params,
                    json=body,
                    headers=headers,
                    timeout=TIMEOUT,
                )
            except httpx.TimeoutException:
                raise RetryableError(f"{what}: no answer within {TIMEOUT:g} s") from None
            except httpx.TransportError as exc:
                raise RetryableError(f"{what}: could not connect ({type(exc).__name__})") from None
            if reply.status_code != 401 or attempt == 2:
                break
            auth.forget(key)  # revoked or expired early: one more try with a new token
        if reply.status_code >= 400:
            raise self._failure(reply, what)
        found = reply.json() if reply.content else {}
        return found if isinstance(found, dict) else {}

    def _failure(self, reply: httpx.Response, what: str) -> Exception:
        code, status, text = _google_error(reply)
        message = f"{what}: HTTP {code} {status}: {text}".rstrip(": ")
        if code == 429 or code >= 500:
            wait = retry_after(reply.headers.get("Retry-After"))
            return RetryableError(message, retry_after=wait)
        email = self.connection.key.client_email
        if code == 401:
            return AuthError(
                f"{message}. Service account {email} was refused: re-enter its key with "
                f"`zapflow connections rekey google_sheets {self.name or '…'}`"
            )
        if code in (403, 404):
            message += f". Check the spreadsheet id, and that it is shared with {email}"
        return PermanentError(message)


def _google_error(reply: httpx.Response) -> tuple[int, str, str]:
    """(code, status, message) of Google's error JSON, or of the bare HTTP answer."""
    try:
        error = reply.json().get("error", {})
    except (ValueError, AttributeError):
        error = {}
    if not isinstance(error, dict):
        error = {"message": str(error)}
    text = str(error.get("message") or reply.reason_phrase or "")
    return reply.status_code, str(error.get("status") or ""), text[:500]
