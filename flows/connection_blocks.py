"""A Prefect Block type per app, generated from the app's connection model: how connections are
stored on Prefect's server, and what its UI's Blocks page shows a form for.

The block type of app ``cinnox`` is "zapflow CINNOX connection" (slug
``zapflow-cinnox-connection``); a connection is one block document of it, named after the
connection (``main``). Each field of the app's connection model becomes a field of the block
with its title, description, examples and default; a field the model types ``SecretStr`` is a
``SecretStr`` of the block too, which Prefect encrypts at rest and the UI masks. A value with
a type of the app's own (a rate such as ``500/min``) is kept as the text the model reads. The
app's model still validates every value when a connection is used: the block is the storage
and the form, the model the rule.

Connections saved before (one generic block type, ``zapflow-connection``, documents named
``<app>--<name>``) are moved to their app's block type by ``connections.migrate_legacy``.
"""

from __future__ import annotations

import re
import types
import typing
from functools import cache
from typing import Annotated, Any

from prefect.blocks.core import Block
from pydantic import BaseModel, Field, SecretStr, TypeAdapter, WithJsonSchema
from pydantic.fields import FieldInfo

from connectors._contract import App

SLUG_SUFFIX = "-connection"
_SIMPLE = (str, int, float, bool)


def block_type_slug(app: str) -> str:
    """``zapflow-<app>-connection`` (Prefect slugs have no underscores)."""
    return f"zapflow-{app.replace('_', '-')}{SLUG_SUFFIX}"


def block_type_name(app: App) -> str:
    """``zapflow <app title> connection``, without the characters Prefect refuses in a name."""
    title = re.sub(r"\s*[/%&><]+\s*", ", ", app.title)
    return f"zapflow {title} connection"


def _storable(annotation: Any) -> bool:
    """Whether the block can keep values of this type as they are (a form field Prefect's UI
    knows: text, number, switch, choice, secret — or an optional one of them)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is SecretStr or annotation in _SIMPLE:
        return True
    if origin is typing.Literal:
        return all(isinstance(a, _SIMPLE) for a in args)
    if origin in (typing.Union, types.UnionType):
        return all(a is type(None) or _storable(a) for a in args)
    return False


def _block_field(name: str, info: FieldInfo) -> tuple[Any, FieldInfo]:
    """The block's field for one field of the connection model."""
    annotation: Any = info.annotation if _storable(info.annotation) else str
    arms = [a for a in typing.get_args(annotation) if a is not type(None)]
    if len(arms) == 1 and len(typing.get_args(annotation)) == 2:  # optional: a plain form field
        plain = TypeAdapter(arms[0]).json_schema()
        annotation = Annotated[annotation, WithJsonSchema(plain)]
    extra: dict[str, Any] = {}
    if info.is_required():
        default: Any = ...
    else:
        value = info.get_default(call_default_factory=True)
        if annotation is SecretStr or isinstance(value, SecretStr):
            default = value if isinstance(value, SecretStr) else SecretStr(str(value or ""))
        elif annotation is str and not isinstance(value, str) and value is not None:
            # The app's own type (e.g. a rate): its text, as the model writes it.
            default = _as_text(info, value)
        else:
            default = value
    if info.examples:
        extra["examples"] = [
            e if isinstance(e, _SIMPLE) or e is None else str(e) for e in info.examples
        ]
    return annotation, Field(
        default, title=info.title or title_of(name), description=info.description, **extra
    )


_ACRONYMS = {"id", "url", "uri", "api", "imap", "smtp", "json", "ca", "sql"}


def title_of(field: str) -> str:
    """A form label from a field name: ``app_id`` → "App ID", ``imap_host`` → "IMAP host"."""
    words = [w.upper() if w in _ACRONYMS else w for w in field.split("_")]
    return " ".join([words[0][:1].upper() + words[0][1:], *words[1:]])


def _as_text(info: FieldInfo, value: Any) -> Any:
    """A value of the app's own type as the connection model writes it in JSON."""
    typed: Any = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    return TypeAdapter(typed).dump_python(value, mode="json")


@cache
def block_class(app: App) -> type[Block]:
    """The app's connection block type (made once per process)."""
    model = app.connection
    if model is None:
        raise ValueError(f"app {app.name!r} has no connection")
    fields = {name: _block_field(name, info) for name, info in model.model_fields.items()}
    annotations = {name: annotation for name, (annotation, _) in fields.items()}
    namespace: dict[str, Any] = {
        "__annotations__": annotations,
        "__module__": __name__,
        "__doc__": f"A {app.title} connection of zapflow: the credentials of one account.",
        "_block_type_name": block_type_name(app),
        "_block_type_slug": block_type_slug(app.name),
        "_description": (
            f"Credentials of one {app.title} account, used by zapflow zaps that name this "
            "block's name as their `connection:` (secrets are encrypted by Prefect). Checked by "
            f"the {app.name} app when a zap uses it; `zapflow connect {app.name} NAME` makes one "
            "from the command line and checks it works."
        ),
        "_code_example": (
            "```yaml\n"
            "# in a zap file, the connection named after this block:\n"
            f"trigger:\n  app: {app.name}\n  event: ...\n  connection: main\n"
            "```"
        ),
        **{name: field for name, (_, field) in fields.items()},
    }
    class_name = "".join(part.capitalize() for part in app.name.split("_")) + "ConnectionBlock"
    return types.new_class(class_name, (Block,), {}, lambda ns: ns.update(namespace))


def values_of(block: Block, app: App) -> dict[str, Any]:
    """The block's values as the app's connection model reads them (secrets revealed, to the
    model only: it wraps them in ``SecretStr`` again)."""
    assert app.connection is not None
    out: dict[str, Any] = {}
    for name in app.connection.model_fields:
        value = getattr(block, name, None)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if value is not None:
            out[name] = value
    return out


def block_of(app: App, connection: BaseModel) -> Block:
    """A block holding the connection's values (each as the model writes it in JSON; secrets
    as they are)."""
    assert app.connection is not None
    plain = connection.model_dump(mode="json")
    values: dict[str, Any] = {}
    for name in app.connection.model_fields:
        value = getattr(connection, name)
        values[name] = (
            SecretStr(value.get_secret_value()) if isinstance(value, SecretStr) else (plain[name])
        )
    return block_class(app)(**{k: v for k, v in values.items() if v is not None})
