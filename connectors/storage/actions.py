"""The storage app's actions: set, get, delete, increment, append to a list, pop from it, and
get everything in a namespace."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import to_jsonable_python

from connectors._contract import ActionContext
from connectors._errors import PermanentError
from connectors._storage import MAX_KEY_LENGTH, MISSING, Missing, check_value
from connectors.storage._app import app

NAMESPACE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
MAX_LIST_LENGTH = 10_000


def _namespace_name(value: str | None) -> str | None:
    if value is not None and not NAMESPACE_NAME.match(value):
        raise ValueError(
            "a namespace is 1 to 100 letters, digits, _, . and -, starting with a letter or digit"
        )
    return value


Key = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_KEY_LENGTH,
        description=f"The key (1 to {MAX_KEY_LENGTH} characters)",
        examples=["last_order_id"],
    ),
]
Namespace = Annotated[
    str | None,
    AfterValidator(_namespace_name),
    Field(
        description="Share values between zaps under this name (letters, digits, _ . -); "
        "default: the zap's own storage, which no other zap sees",
        examples=["shop"],
    ),
]
Number = Annotated[int | float, Field(allow_inf_nan=False)]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: Key
    namespace: Namespace = None


class SetValueInput(_Input):
    value: Any = Field(description="Any JSON value: text, a number, true/false, a list, an object")


class GetValueInput(_Input):
    default: Any = Field(None, description="What to return when the key holds nothing")


class IncrementInput(_Input):
    by: Number = Field(1, description="How much to add (negative to subtract)")


class AppendInput(_Input):
    value: Any = Field(description="The JSON value to add at the end of the list")
    max_length: int | None = Field(
        None,
        ge=1,
        le=MAX_LIST_LENGTH,
        description="Keep at most this many entries, dropping the oldest; default: keep all "
        "(as long as the list fits the value size limit)",
    )


class PopInput(_Input):
    end: Literal["last", "first"] = Field(
        "last", description="Take the newest entry (last) or the oldest (first)"
    )
    default: Any = Field(None, description="What to return when the list is empty or missing")


class NamespaceInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespace: Namespace = None


class _Keyed(BaseModel):
    key: str = Field(description="The key")


class Stored(_Keyed):
    value: Any = Field(description="The value now stored")


class Found(_Keyed):
    value: Any = Field(description="The stored value, or the default when there is none")
    found: bool = Field(description="Whether the key holds a value")


class Deleted(_Keyed):
    value: Any = Field(description="The value that was deleted; null when there was none")
    deleted: bool = Field(description="Whether the key held a value")


class Incremented(_Keyed):
    value: int | float = Field(description="The number after adding")
    previous: int | float = Field(description="The number before (0 when the key was new)")


class Appended(_Keyed):
    value: list[Any] = Field(description="The whole list after appending")
    length: int = Field(description="Entries in the list")


class Popped(_Keyed):
    value: Any = Field(description="The entry taken off the list, or the default")
    found: bool = Field(description="Whether the list had an entry to take")
    remaining: int = Field(description="Entries left in the list")


class Everything(BaseModel):
    values: dict[str, Any] = Field(description="Every key of the namespace and its value")
    count: int = Field(description="How many keys the namespace holds")


def namespace_of(given: str | None, ctx: ActionContext) -> str:
    """The zap's own storage by default; a named one is shared by every zap naming it."""
    return f"shared:{given}" if given is not None else f"zap:{ctx.zap_id}"


def _json(value: Any, what: str = "value") -> Any:
    """A value as JSON (a YAML date becomes ISO text), within the size limit."""
    return check_value(to_jsonable_python(value), what)


@app.action("set_value", title="Set a value")
async def set_value(input: SetValueInput, ctx: ActionContext) -> Stored:
    """Stores a JSON value under a key, replacing what was there."""
    value = _json(input.value)
    store = await ctx.storage()
    await store.change(namespace_of(input.namespace, ctx), input.key, lambda _: (value, None))
    return Stored(key=input.key, value=value)


@app.action("get_value", title="Get a value", side_effects=False)
async def get_value(input: GetValueInput, ctx: ActionContext) -> Found:
    """Reads the value stored under a key, or the `default` when there is none."""
    store = await ctx.storage()
    value = await store.get(namespace_of(input.namespace, ctx), input.key)
    if isinstance(value, Missing):
        return Found(key=input.key, value=_json(input.default, "default"), found=False)
    return Found(key=input.key, value=value, found=True)


@app.action("delete_value", title="Delete a value")
async def delete_value(input: _Input, ctx: ActionContext) -> Deleted:
    """Removes a key and its value; deleting a key that holds nothing is not an error."""
    store = await ctx.storage()
    old = await store.change(namespace_of(input.namespace, ctx), input.key, lambda v: (MISSING, v))
    if isinstance(old, Missing):
        return Deleted(key=input.key, value=None, deleted=False)
    return Deleted(key=input.key, value=old, deleted=True)


@app.action("increment", title="Increment a number")
async def increment(input: IncrementInput, ctx: ActionContext) -> Incremented:
    """Adds `by` to the number stored under a key (a new key starts at 0), atomically: steps
    running at once each count exactly once. A key holding something else than a number is
    an error."""

    def add(current: Any) -> tuple[Any, tuple[Any, Any]]:
        before = 0 if isinstance(current, Missing) else current
        if isinstance(before, bool) or not isinstance(before, int | float):
            raise PermanentError(
                f"key {input.key!r} holds {_kind(before)}, not a number: increment needs one"
            )
        return before + input.by, (before, before + input.by)

    store = await ctx.storage()
    namespace = namespace_of(input.namespace, ctx)
    before, after = await store.change(namespace, input.key, add)
    return Incremented(key=input.key, value=after, previous=before)


@app.action("append_to_list", title="Add a value to a list")
async def append_to_list(input: AppendInput, ctx: ActionContext) -> Appended:
    """Adds a value at the end of the list stored under a key (a new key starts an empty
    list), atomically; with `max_length`, the oldest entries are dropped to keep that many."""
    entry = _json(input.value)

    def add(current: Any) -> tuple[Any, list[Any]]:
        items = [] if isinstance(current, Missing) else current
        if not isinstance(items, list):
            raise PermanentError(
                f"key {input.key!r} holds {_kind(items)}, not a list: append_to_list needs one"
            )
        items = [*items, entry]
        if input.max_length is not None:
            items = items[-input.max_length :]
        return items, items

    store = await ctx.storage()
    items = await store.change(namespace_of(input.namespace, ctx), input.key, add)
    return Appended(key=input.key, value=items, length=len(items))


@app.action("pop_from_list", title="Take a value off a list")
async def pop_from_list(input: PopInput, ctx: ActionContext) -> Popped:
    """Takes the last (or first) entry off the list stored under a key, atomically: steps
    running at once never take the same entry. An empty or missing list gives the `default`."""
    default = _json(input.default, "default")

    def take(current: Any) -> tuple[Any, Popped]:
        if isinstance(current, Missing) or current == []:
            return current, Popped(key=input.key, value=default, found=False, remaining=0)
        if not isinstance(current, list):
            raise PermanentError(
                f"key {input.key!r} holds {_kind(current)}, not a list: pop_from_list needs one"
            )
        index = -1 if input.end == "last" else 0
        rest = [*current]
        value = rest.pop(index)
        return rest, Popped(key=input.key, value=value, found=True, remaining=len(rest))

    store = await ctx.storage()
    return await store.change(namespace_of(input.namespace, ctx), input.key, take)


@app.action("get_all", title="Get all values", side_effects=False)
async def get_all(input: NamespaceInput, ctx: ActionContext) -> Everything:
    """Reads every key and value of the zap's storage (or of the named namespace)."""
    store = await ctx.storage()
    values = await store.get_all(namespace_of(input.namespace, ctx))
    return Everything(values=values, count=len(values))


def _kind(value: Any) -> str:
    kinds = {bool: "true/false", int: "a number", float: "a number", str: "text"}
    kinds |= {dict: "an object", list: "a list"}
    return next((name for t, name in kinds.items() if isinstance(value, t)), "null")
