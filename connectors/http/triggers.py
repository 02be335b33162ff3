"""The HTTP app's polling trigger: new items in a JSON list that a URL answers with."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from connectors._contract import PollingOptions, PollResult
from connectors._errors import PermanentError
from connectors.http._app import app
from connectors.http.actions import _URL_HELP, Headers, Scalar, Timeout, Url, _text
from connectors.http.client import Outgoing, _described, send
from connectors.http.connection import HttpConnection

_PATH_HELP = "dotted field names (a number picks a list entry), e.g. data.items"


class NewItemsOptions(PollingOptions):
    url: Url = Field(description=_URL_HELP, examples=["https://api.example.com/v1/orders"])
    headers: Headers = Field(default_factory=dict, description="Request headers")
    query: dict[str, Scalar] = Field(
        default_factory=dict, description="Query parameters added to the URL"
    )
    timeout: Timeout = Field(timedelta(seconds=30), description="Longest a poll may take, up to 5m")
    items_path: str = Field(
        "",
        description=f"Where the list of items is in the answer: {_PATH_HELP}; empty: the "
        "answer is the list",
    )
    id_field: str = Field(
        "id",
        min_length=1,
        description="The field that identifies an item (dotted for a nested one): an item "
        "whose id was seen before is not new",
    )
    cursor_field: str | None = Field(
        None,
        min_length=1,
        description="A field that grows with each new item (a number, or a time always written "
        "the same way, e.g. created_at): items below the highest value seen are skipped, and "
        "the zap runs on new items in its order",
    )
    cursor_param: str | None = Field(
        None,
        min_length=1,
        description="With cursor_field: a query parameter that sends the highest value seen "
        "(e.g. since), so the service answers with newer items only",
    )


class Item(BaseModel):
    """One item of the list: any JSON object; its fields are what the zap reads as
    ``trigger.<field>``."""

    model_config = ConfigDict(extra="allow")


def _dig(value: Any, path: str) -> Any:
    """The value at a dotted path, or None where there is none."""
    for part in filter(None, path.split(".")):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def _before(value: Any, mark: Any, what: str) -> bool:
    """Whether a cursor_field value comes before the highest one seen."""
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (value, mark))
    if not (numbers or (isinstance(value, str) and isinstance(mark, str))):
        raise PermanentError(
            f"{what}: cursor_field values must be all numbers or all text, got {value!r} "
            f"after {mark!r}"
        )
    return bool(value < mark)


@app.polling_trigger(
    "new_items",
    title="New item in a JSON list",
    payload=Item,
    samples=[{"id": 1001, "title": "Order from Chan Tai Man", "created_at": "2026-11-25T09:30Z"}],
    interval=timedelta(minutes=5),
)
async def new_items(
    connection: HttpConnection | None, options: NewItemsOptions, cursor: dict[str, Any] | None
) -> PollResult:
    """Polls a URL that answers with a JSON list (GET, with the connection's credentials if the
    zap names one) and starts the zap once for each item not seen before, identified by
    `id_field`. The zap reads the item's fields as `trigger.<field>`.

    Without a `cursor_field` the answer should hold the latest items (say the last 50); with
    one, items below the highest value seen are skipped, and with a `cursor_param` that value is
    sent along so the service answers with newer items only.
    """
    params = {name: _text(value) for name, value in options.query.items()}
    mark = (cursor or {}).get("last")
    if options.cursor_param and mark is not None:
        params[options.cursor_param] = _text(mark)
    headers = {name: _text(value) for name, value in options.headers.items()}
    out = Outgoing("GET", options.url, options.timeout.total_seconds(), headers, params)
    answer = await send(out, connection)
    what = _described("GET", httpx.URL(answer.url))
    found = _dig(answer.body, options.items_path)
    if not isinstance(found, list):
        where = f"at items_path {options.items_path!r}" if options.items_path else "as its body"
        raise PermanentError(f"{what} has no list {where}; items_path is {_PATH_HELP}")
    items: list[tuple[str, dict[str, Any]]] = []
    for i, item in enumerate(found):
        key = _dig(item, options.id_field) if isinstance(item, dict) else None
        if not isinstance(key, str | int | float) or isinstance(key, bool) or key == "":
            raise PermanentError(f"{what}: item {i} has no {options.id_field!r} (id_field)")
        if options.cursor_field is not None:
            value = _dig(item, options.cursor_field)
            if value is None:
                raise PermanentError(f"{what}: item {i} has no {options.cursor_field!r}")
            if mark is not None and _before(value, mark, what):
                continue
        items.append((str(key), item))
    if options.cursor_field is None:
        return PollResult(items)
    field = options.cursor_field
    try:
        items.sort(key=lambda pair: _dig(pair[1], field))
    except TypeError:
        raise PermanentError(
            f"{what}: cursor_field values must be all numbers or all text"
        ) from None
    highest = _dig(items[-1][1], field) if items else mark
    return PollResult(items, {"last": highest} if highest is not None else None)
