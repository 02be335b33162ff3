"""The Google Sheets app against a Sheets API on loopback that answers as Google's does: the
token endpoint checks the service account's signed JWT against its public key, values.get,
values:append and values:batchUpdate keep a sheet in memory, and errors come as Google's
`{"error": {"code", "message", "status"}}`. A zap appends follow-ups; rows are found, updated
and watched by column name; each kind of failure becomes the error class that tells the engine
what to do next; the key and tokens never reach a message."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors import ActionContext, registry
from connectors._errors import AuthError, PermanentError, RetryableError
from connectors._loopback import bind, serve_in_thread
from connectors.google_sheets import auth, client
from connectors.google_sheets.connection import GoogleSheetsConnection
from connectors.google_sheets.triggers import NewOrUpdatedRowOptions, new_or_updated_row
from flows import connections
from flows.events import Event
from flows.loader import load_zap_text
from flows.plan import plan_of
from flows.runtime import ZapRun

SHEET_ID = "1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms"
EMAIL = "zaps@zapflow-test.iam.gserviceaccount.com"
RANGE = re.compile(r"^(?:'((?:[^']|'')+)'|([^!]+))(?:!(.+))?$")
CELL = re.compile(r"^([A-Z]+)(\d+)$")


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _index(letters: str) -> int:
    number = 0
    for letter in letters:
        number = number * 26 + ord(letter) - ord("A") + 1
    return number - 1


def _letters(index: int) -> str:
    return client.column_letters(index)


def _google_error(code: int, status: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "status": status}}, status_code=code
    )


# --------------------------------------------------------------------------- the fake API


@dataclass
class FakeGoogle:
    """Google's token endpoint and the Sheets API v4, in memory."""

    public_key: rsa.RSAPublicKey
    url: str = ""
    sheets: dict[str, dict[str, list[list[Any]]]] = field(default_factory=dict)
    tokens: dict[str, float] = field(default_factory=dict)
    token_lifetime: int = 3599
    calls: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)
    fail: list[Response] = field(default_factory=list)
    delay: float = 0.0
    token_requests: int = 0

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    def reset(self) -> None:
        self.sheets = {SHEET_ID: {"Calls": []}}
        self.tokens.clear()
        self.calls.clear()
        self.fail.clear()
        self.delay, self.token_lifetime, self.token_requests = 0.0, 3599, 0

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/token", self.token, methods=["POST"]),
                Route("/v4/spreadsheets/{sid}/values:batchUpdate", self.batch, methods=["POST"]),
                Route(
                    "/v4/spreadsheets/{sid}/values/{rest:path}",
                    self.values,
                    methods=["GET", "POST"],
                ),
                Route("/v4/spreadsheets/{sid}", self.meta, methods=["GET"]),
            ]
        )

    # ---- tokens

    async def token(self, request: Request) -> Response:
        self.token_requests += 1
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        if form.get("grant_type") != auth.GRANT_TYPE:
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        problem = self._check_jwt(str(form.get("assertion", "")))
        if problem:
            return JSONResponse(
                {"error": "invalid_grant", "error_description": problem}, status_code=400
            )
        token = f"ya29.{uuid.uuid4().hex}"
        self.tokens[token] = time.time() + self.token_lifetime
        return JSONResponse(
            {"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"}
        )

    def _check_jwt(self, jwt: str) -> str | None:
        try:
            head, body, signature = jwt.split(".")
            header, claims = json.loads(_unb64(head)), json.loads(_unb64(body))
            self.public_key.verify(
                _unb64(signature), f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except (ValueError, InvalidSignature):
            return "Invalid JWT Signature."
        if header.get("alg") != "RS256" or claims.get("iss") != EMAIL:
            return "Invalid JWT: wrong algorithm or issuer"
        if claims.get("aud") != self.token_uri or "spreadsheets" not in claims.get("scope", ""):
            return "Invalid JWT: wrong audience or scope"
        if not claims["iat"] <= time.time() + 5 < claims["exp"] <= claims["iat"] + 3600:
            return "Invalid JWT: Token must be a short-lived token (60 minutes)"
        return None

    # ---- the API

    def _refusal(self, request: Request, sid: str) -> Response | None:
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        if self.tokens.get(bearer, 0) < time.time():
            return _google_error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token",
            )
        if self.fail:
            return self.fail.pop(0)
        if sid not in self.sheets:
            return _google_error(404, "NOT_FOUND", "Requested entity was not found.")
        return None

    def _sheet(self, sid: str, range_: str) -> tuple[list[list[Any]], str | None] | Response:
        found = RANGE.match(range_)
        title = (found.group(1) or "").replace("''", "'") or found.group(2) if found else None
        if title not in self.sheets[sid]:
            return _google_error(400, "INVALID_ARGUMENT", f"Unable to parse range: {range_}")
        return self.sheets[sid][title], found.group(3) if found else None

    async def _record(self, request: Request, name: str) -> Any:
        body = await request.body()
        self.calls.append(
            (name, request.method, dict(request.query_params), json.loads(body or "null"))
        )
        if self.delay:
            await asyncio.sleep(self.delay)
        return json.loads(body or "null")

    async def meta(self, request: Request) -> Response:
        sid = request.path_params["sid"]
        await self._record(request, "get")
        refused = self._refusal(request, sid)
        if refused:
            return refused
        titles = list(self.sheets[sid])
        sheets = [
            {"properties": {"sheetId": i, "title": t, "index": i}} for i, t in enumerate(titles)
        ]
        return JSONResponse({"spreadsheetId": sid, "sheets": sheets})

    async def values(self, request: Request) -> Response:
        sid = request.path_params["sid"]
        raw = request.scope["raw_path"].decode().split("/values/", 1)[1]
        appending = raw.endswith(":append")
        range_ = unquote(raw.removesuffix(":append"))
        body = await self._record(request, "values.append" if appending else "values.get")
        refused = self._refusal(request, sid)
        if refused:
            return refused
        found = self._sheet(sid, range_)
        if isinstance(found, Response):
            return found
        rows, ref = found
        if appending:
            return self._append(sid, range_, rows, body, request.query_params["valueInputOption"])
        if request.query_params.get("valueRenderOption") != "UNFORMATTED_VALUE":
            return _google_error(400, "INVALID_ARGUMENT", "test API: ask for UNFORMATTED_VALUE")
        shown = _trimmed(rows[:1] if ref == "1:1" else rows)
        answer: dict[str, Any] = {"range": range_, "majorDimension": "ROWS"}
        return JSONResponse({**answer, "values": shown} if shown else answer)

    def _append(
        self, sid: str, range_: str, rows: list[list[Any]], body: Any, option: str
    ) -> Response:
        start = len(_trimmed(rows)) + 1
        new = [[_entered(v, option) for v in row] for row in body["values"]]
        rows[start - 1 : start - 1 + len(new)] = new
        end = start + len(new) - 1
        title = range_.split("!")[0]
        width = max(len(r) for r in new)
        updated = f"{title}!A{start}:{_letters(width - 1)}{end}"
        return JSONResponse(
            {
                "spreadsheetId": sid,
                "tableRange": f"{title}!A1:{_letters(width - 1)}{start - 1}",
                "updates": {"spreadsheetId": sid, "updatedRange": updated, "updatedRows": len(new)},
            }
        )

    async def batch(self, request: Request) -> Response:
        sid = request.path_params["sid"]
        body = await self._record(request, "values.batchUpdate")
        refused = self._refusal(request, sid)
        if refused:
            return refused
        for item in body["data"]:
            found = self._sheet(sid, item["range"])
            if isinstance(found, Response):
                return found
            rows, ref = found
            column, number = CELL.match(ref or "").groups()  # type: ignore[union-attr]
            while len(rows) < int(number):
                rows.append([])
            row = rows[int(number) - 1]
            row.extend([""] * (_index(column) + 1 - len(row)))
            row[_index(column)] = _entered(item["values"][0][0], body["valueInputOption"])
        return JSONResponse({"spreadsheetId": sid, "totalUpdatedCells": len(body["data"])})


def _entered(value: Any, option: str) -> Any:
    """USER_ENTERED parses text the way typing into a cell does; RAW stores it as it is."""
    if option == "USER_ENTERED" and isinstance(value, str):
        if re.fullmatch(r"-?\d+(\.\d+)?", value):
            return float(value) if "." in value else int(value)
        if value.startswith("="):
            return f"<formula {value}>"
    return value


def _trimmed(rows: list[list[Any]]) -> list[list[Any]]:
    """As Google answers: no trailing empty cells or rows."""
    out = []
    for row in rows:
        row = list(row)
        while row and row[-1] in ("", None):
            row.pop()
        out.append(row)
    while out and not out[-1]:
        out.pop()
    return out


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def running_google(key: rsa.RSAPrivateKey) -> Iterator[FakeGoogle]:
    fake = FakeGoogle(key.public_key())
    with serve_in_thread(fake.app()) as url:
        fake.url = url
        yield fake


@pytest.fixture
def google(running_google: FakeGoogle) -> FakeGoogle:
    running_google.reset()
    auth._tokens.clear()
    return running_google


@pytest.fixture(scope="module", autouse=True)
async def _close_pooled_clients() -> Any:
    yield
    await auth.clients.close_all()


def key_json(google: FakeGoogle, key: rsa.RSAPrivateKey) -> str:
    """A service account key file as Google Cloud gives it."""
    return json.dumps(
        {
            "type": "service_account",
            "project_id": "zapflow-test",
            "private_key_id": "k1",
            "private_key": _pem(key),
            "client_email": EMAIL,
            "client_id": "1234567890",
            "token_uri": google.token_uri,
        }
    )


@pytest.fixture
def conn(google: FakeGoogle, key: rsa.RSAPrivateKey) -> GoogleSheetsConnection:
    return GoogleSheetsConnection(
        service_account_json=key_json(google, key), api_base_url=google.url
    )


async def call(name: str, data: dict[str, Any], conn: GoogleSheetsConnection) -> Any:
    action = registry.action(f"google_sheets.{name}")
    ctx = ActionContext("follow-ups", "log", "r", "e", connection=conn, connection_name="work")
    out = await action.run(
        action.input_model.model_validate({"spreadsheet": SHEET_ID, **data}), ctx
    )
    assert isinstance(out, action.output_model)
    return out


async def fill(conn: GoogleSheetsConnection) -> None:
    for case, agent, minutes in (("HK-1", "Mei", 3), ("HK-2", "Ken", 12), ("HK-3", "mei", 7.5)):
        await call("append_row", {"row": {"Case": case, "Agent": agent, "Minutes": minutes}}, conn)


# --------------------------------------------------------------------------- a zap


async def test_a_zap_appends_follow_ups_to_a_google_sheet(
    google: FakeGoogle, key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZAPFLOW_GOOGLE_SHEETS_WORK_SERVICE_ACCOUNT_JSON", key_json(google, key))
    monkeypatch.setenv("ZAPFLOW_GOOGLE_SHEETS_WORK_API_BASE_URL", google.url)
    zap = load_zap_text(
        "zap: missed-calls\ntrigger: {app: builtin, event: catch_hook}\nsteps:\n"
        "  - id: log\n    action: google_sheets.append_row\n    connection: work\n"
        "    input:\n"
        f"      spreadsheet: https://docs.google.com/spreadsheets/d/{SHEET_ID}/edit#gid=0\n"
        "      row: {Case: '{{ trigger.displayCaseNumber }}', Customer: '{{ trigger.name }}',"
        " Calls: '{{ trigger.calls }}'}\n"
    )
    for case, name, calls in (("HK-1042", "Chan Tai Man", 2), ("HK-1043", "陳小明", 1)):
        payload = {"displayCaseNumber": case, "name": name, "calls": calls}
        outcome = await ZapRun(
            plan_of(zap), Event(app="builtin", trigger="catch_hook", payload=payload)
        ).execute()
        assert outcome.status == "completed", outcome.message
    assert outcome.outputs["log"]["row_number"] == 3
    assert google.sheets[SHEET_ID]["Calls"] == [
        ["Case", "Customer", "Calls"],
        ["HK-1042", "Chan Tai Man", 2],
        ["HK-1043", "陳小明", 1],
    ]
    assert google.token_requests == 1  # the token is kept until it expires
    text = json.dumps(outcome.outputs) + outcome.message
    assert "PRIVATE KEY" not in text and "ya29." not in text


# --------------------------------------------------------------------------- actions


async def test_append_reads_the_header_and_appends_under_the_table(
    google: FakeGoogle, conn: GoogleSheetsConnection
) -> None:
    first = await call("append_row", {"row": {"Case": "HK-1", "Status": "open"}}, conn)
    assert first.created and first.row_number == 2
    second = await call("append_row", {"row": {"status": "new", "CASE": "HK-2"}}, conn)
    assert second.row_number == 3 and second.row == {"Case": "HK-2", "Status": "new"}
    names = [name for name, *_ in google.calls]
    assert names == ["get", "values.get", "values.append", "get", "values.get", "values.append"]
    _, _, params, body = google.calls[-1]
    assert params == {"valueInputOption": "RAW", "insertDataOption": "INSERT_ROWS"}
    assert body["values"] == [["HK-2", "new"]]


async def test_an_unknown_column_is_refused_and_add_columns_extends_the_header(
    google: FakeGoogle, conn: GoogleSheetsConnection
) -> None:
    await call("append_row", {"row": {"Case": "HK-1"}}, conn)
    with pytest.raises(
        PermanentError, match=r"sheet 'Calls' has no column 'Agent'; its columns: Case"
    ):
        await call("append_row", {"row": {"Case": "HK-2", "Agent": "Mei"}}, conn)
    out = await call(
        "append_row", {"row": {"Case": "HK-2", "Agent": "Mei"}, "add_columns": True}, conn
    )
    assert out.added_columns == ["Agent"]
    assert google.sheets[SHEET_ID]["Calls"] == [["Case", "Agent"], ["HK-1"], ["HK-2", "Mei"]]


async def test_find_rows_matches_text_and_numbers_like_the_local_app(
    google: FakeGoogle, conn: GoogleSheetsConnection
) -> None:
    await fill(conn)
    found = await call("find_rows", {"column": "Minutes", "value": "12.0"}, conn)
    assert found.first == {"Case": "HK-2", "Agent": "Ken", "Minutes": 12} and found.row_numbers == [
        3
    ]
    loose = await call("find_rows", {"column": "agent", "value": "MEI", "ignore_case": True}, conn)
    assert loose.row_numbers == [2, 4] and loose.count == 2
    none = await call("find_rows", {"column": "Case", "value": "HK-9"}, conn)
    assert not none.found and none.first is None
    every = await call("find_rows", {"limit": 1}, conn)
    assert every.count == 3 and every.row_numbers == [2]
    _, _, params, _ = google.calls[-1]
    assert params == client.RENDER


async def test_update_writes_only_the_given_cells_in_one_request(
    google: FakeGoogle, conn: GoogleSheetsConnection
) -> None:
    await fill(conn)
    google.calls.clear()
    out = await call(
        "update_row",
        {
            "column": "Case",
            "value": "HK-2",
            "row": {"Minutes": 15, "Outcome": "called back"},
            "add_columns": True,
        },
        conn,
    )
    assert out.result == "updated" and out.row_number == 3 and out.changed == ["Minutes", "Outcome"]
    ((name, _, _, body),) = [c for c in google.calls if c[0] == "values.batchUpdate"]
    assert {d["range"]: d["values"] for d in body["data"]} == {
        "'Calls'!C3": [[15]],
        "'Calls'!D3": [["called back"]],
        "'Calls'!D1": [["Outcome"]],
    }
    assert google.sheets[SHEET_ID]["Calls"][2] == ["HK-2", "Ken", 15, "called back"]


async def test_update_of_a_missing_row_fails_skips_or_appends(
    google: FakeGoogle, conn: GoogleSheetsConnection
) -> None:
    await fill(conn)
    lookup = {"column": "Case", "value": "HK-9", "row": {"Agent": "Ann"}}
    with pytest.raises(PermanentError, match="sheet 'Calls' has no row where Case is 'HK-9'"):
        await call("update_row", lookup, conn)
    assert (await call("update_row", {**lookup, "if_missing": "skip"}, conn)).result == "skipped"
    appended = await call("update_row", {**lookup, "if_missing": "append"}, conn)
    assert appended.result == "appended" and appended.row_number == 5
    assert google.sheets[SHEET_ID]["Calls"][4] == ["HK-9", "Ann"]


async def test_text_stays_text_unless_user_entered_is_asked_for(
    google: FakeGoogle, conn: GoogleSheetsConnection
) -> None:
    await call("append_row", {"row": {"Note": "=IMPORTXML(1)", "N": "42"}}, conn)
    await call(
        "append_row", {"row": {"Note": "=1+1", "N": "42"}, "value_input": "user_entered"}, conn
    )
    assert google.sheets[SHEET_ID]["Calls"][1:] == [["=IMPORTXML(1)", "42"], ["<formula =1+1>", 42]]


async def test_a_named_sheet_is_quoted_and_the_first_sheet_is_the_default(
    google: FakeGoogle, conn: GoogleSheetsConnection
) -> None:
    google.sheets[SHEET_ID]["Bob's calls"] = [["Case"], ["B-1"]]
    found = await call("find_rows", {"sheet": "Bob's calls"}, conn)
    assert found.first == {"Case": "B-1"}
    assert [c[0] for c in google.calls] == ["values.get"]  # a named sheet needs no look-up
    with pytest.raises(
        PermanentError, match=r"HTTP 400 INVALID_ARGUMENT: Unable to parse range: 'Nope'"
    ):
        await call("find_rows", {"sheet": "Nope"}, conn)


@pytest.mark.parametrize(
    ("value", "message"),
    [("not an id!", "give the spreadsheet's id"), ("short", "give the spreadsheet's id")],
)
def test_a_bad_spreadsheet_id_is_refused_before_any_call(value: str, message: str) -> None:
    model = registry.action("google_sheets.find_rows").input_model
    with pytest.raises(ValidationError, match=message):
        model.model_validate({"spreadsheet": value})


# --------------------------------------------------------------------------- failures


async def test_a_token_is_kept_until_it_expires_then_renewed(
    google: FakeGoogle, conn: GoogleSheetsConnection
) -> None:
    await fill(conn)
    assert google.token_requests == 1
    google.token_lifetime = 60  # replaced a minute before it expires: here, at once
    auth._tokens.clear()
    await call("find_rows", {}, conn)  # two requests: the sheet's name, then its values
    assert google.token_requests == 3


async def test_a_revoked_token_is_replaced_once_then_it_is_an_auth_error(
    google: FakeGoogle, conn: GoogleSheetsConnection
) -> None:
    await fill(conn)
    google.tokens.clear()  # revoked on Google's side
    assert (await call("find_rows", {}, conn)).count == 3
    google.fail = [_google_error(401, "UNAUTHENTICATED", "Request had invalid credentials.")] * 2
    with pytest.raises(AuthError) as info:
        await call("find_rows", {}, conn)
    message = str(info.value)
    assert "HTTP 401 UNAUTHENTICATED: Request had invalid credentials" in message
    assert f"Service account {EMAIL} was refused" in message
    assert "zapflow connections rekey google_sheets work" in message


async def test_a_key_google_does_not_know_is_an_auth_error_without_the_key(
    google: FakeGoogle,
) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    conn = GoogleSheetsConnection(
        client_email=EMAIL,
        private_key=_pem(stranger),
        token_uri=google.token_uri,
        api_base_url=google.url,
    )
    with pytest.raises(AuthError) as info:
        await call("find_rows", {}, conn)
    message = str(info.value)
    assert "answered HTTP 400: invalid_grant (Invalid JWT Signature.)" in message
    assert "PRIVATE KEY" not in message and "connections rekey google_sheets work" in message


@pytest.mark.parametrize("code", [429, 500, 503])
async def test_rate_limits_and_server_errors_are_retryable(
    google: FakeGoogle, conn: GoogleSheetsConnection, code: int
) -> None:
    reply = _google_error(
        code, "RESOURCE_EXHAUSTED" if code == 429 else "UNAVAILABLE", "Quota exceeded"
    )
    reply.headers["Retry-After"] = "7"
    google.fail = [reply]
    with pytest.raises(RetryableError, match=f"HTTP {code} .*Quota exceeded") as info:
        await call("find_rows", {}, conn)
    assert info.value.retry_after == 7.0


@pytest.mark.parametrize(
    ("code", "status", "hint"),
    [
        (400, "INVALID_ARGUMENT", ""),
        (403, "PERMISSION_DENIED", f"shared with {EMAIL}"),
        (404, "NOT_FOUND", f"shared with {EMAIL}"),
    ],
)
async def test_refusals_fail_at_once_with_googles_message(
    google: FakeGoogle, conn: GoogleSheetsConnection, code: int, status: str, hint: str
) -> None:
    google.fail = [_google_error(code, status, "The caller does not have permission")]
    with pytest.raises(PermanentError) as info:
        await call("find_rows", {}, conn)
    assert not isinstance(info.value, AuthError)
    assert f"HTTP {code} {status}: The caller does not have permission" in str(info.value)
    assert hint in str(info.value)


async def test_an_unknown_spreadsheet_is_not_found(
    google: FakeGoogle, conn: GoogleSheetsConnection
) -> None:
    google.sheets.clear()
    with pytest.raises(PermanentError, match="HTTP 404 NOT_FOUND: Requested entity was not found"):
        await call("find_rows", {}, conn)


async def test_a_slow_or_unreachable_api_is_retryable(
    google: FakeGoogle, key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = GoogleSheetsConnection(
        service_account_json=key_json(google, key), api_base_url=google.url
    )
    monkeypatch.setattr(client, "TIMEOUT", 0.2)
    google.delay = 1.0
    with pytest.raises(RetryableError, match="no answer within 0.2 s"):
        await call("find_rows", {}, conn)
    google.delay = 0.0
    sock = bind()
    port = sock.getsockname()[1]
    sock.close()  # a port nobody listens on
    away = GoogleSheetsConnection(
        service_account_json=key_json(google, key), api_base_url=f"http://127.0.0.1:{port}"
    )
    with pytest.raises(RetryableError, match="could not connect"):
        await call("find_rows", {}, away)


# --------------------------------------------------------------------------- the trigger


async def test_the_trigger_notices_new_and_changed_rows(
    google: FakeGoogle, conn: GoogleSheetsConnection
) -> None:
    await fill(conn)
    options = NewOrUpdatedRowOptions(spreadsheet=SHEET_ID, key_column="Case")
    first = await new_or_updated_row(conn, options, None)
    assert [k for k, _ in first.items] == ["HK-1#1", "HK-2#2", "HK-3#3"]
    assert (await new_or_updated_row(conn, options, first.cursor)).items == []
    await call("update_row", {"column": "Case", "value": "HK-1", "row": {"Agent": "Ann"}}, conn)
    await call("append_row", {"row": {"Case": "HK-4"}}, conn)
    later = await new_or_updated_row(conn, options, first.cursor)
    assert [(k, p["change"], p["row"]["Agent"]) for k, p in later.items] == [
        ("HK-1#4", "updated", "Ann"),
        ("HK-4#5", "new", None),
    ]


# --------------------------------------------------------------------------- the connection


def test_a_connection_takes_the_key_file_or_its_fields_and_masks_the_key(
    google: FakeGoogle, key: rsa.RSAPrivateKey
) -> None:
    whole = GoogleSheetsConnection(service_account_json=key_json(google, key))
    fields = GoogleSheetsConnection(client_email=EMAIL, private_key=_pem(key))
    assert whole.key.client_email == fields.key.client_email == EMAIL
    assert whole.key.token_uri == google.token_uri  # the key file's
    assert fields.key.token_uri == "https://oauth2.googleapis.com/token"
    assert whole.api == "https://sheets.googleapis.com"
    shown = repr(whole) + repr(fields) + repr(whole.key) + str(connections.masked(whole))
    assert "PRIVATE KEY" not in shown and "MII" not in shown


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "give service_account_json (the key file, whole), or client_email and private_key"),
        ({"service_account_json": "{not json"}, "must be a service account's JSON key file"),
        (
            {"client_email": EMAIL, "private_key": "-----BEGIN PRIVATE KEY-----\nMIIsecret"},
            "private_key is not an RSA private key in PEM form",
        ),
        ({"client_email": EMAIL, "private_key": "x", "service_account_json": "{}"}, "not both"),
        (
            {"client_email": EMAIL, "private_key": "x", "api_base_url": "ftp://x"},
            "api_base_url must be",
        ),
    ],
)
def test_bad_connections_are_refused_without_showing_the_key(
    values: dict[str, str], message: str
) -> None:
    app = registry.app("google_sheets")
    with pytest.raises(connections.ConnectionProblem) as info:
        connections.validate(app, "work", values)
    assert message in str(info.value)
    assert "MIIsecret" not in str(info.value)


async def test_the_connection_check_gets_a_token(
    google: FakeGoogle, conn: GoogleSheetsConnection
) -> None:
    check = registry.app("google_sheets").check
    assert check is not None
    assert EMAIL in await check(conn, "work")
    assert google.token_requests == 1


def test_the_app_is_listed_with_its_steps() -> None:
    app = registry.app("google_sheets")
    assert set(app.actions) == {"append_row", "find_rows", "update_row"}
    assert app.triggers["new_or_updated_row"].kind == "polling"
    assert app.connection_required
    assert not app.actions["find_rows"].side_effects
