"""Connections: named credentials of one app account (e.g. the CINNOX account "main").

Stored as Prefect Blocks, one block type per app generated from its connection model
(``flows.connection_blocks``: ``zapflow-cinnox-connection``, a document per connection named
after it): the app's secret fields (those its connection model types ``SecretStr``) are secret
fields of the block, which the Prefect server encrypts at rest and never shows; the Prefect UI's
Blocks page creates and edits them with a form. They can also come from the environment (CI,
containers): ``ZAPFLOW_<APP>_<NAME>_<FIELD>``, e.g. ``ZAPFLOW_CINNOX_MAIN_APP_TOKEN``; the
environment wins.

Values leave this module only as the app's connection model, whose secrets are ``SecretStr``
(masked in ``repr``, logs and errors), or masked for display.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError

from connectors._contract import App
from connectors._errors import PermanentError
from flows.model import CONNECTION_NAME

NAME_PATTERN = CONNECTION_NAME
LEGACY_SLUG = "zapflow-connection"
"""The block type all connections were stored as before each app had its own."""
MASK = "********"
log = logging.getLogger("zapflow.connections")
_CACHE_SECONDS = 30.0
_cache: dict[tuple[str, str], tuple[float, BaseModel]] = {}


class ConnectionProblem(PermanentError):
    """A connection is missing or not usable; running again will not help until it is fixed."""


@dataclass
class ConnectionInfo:
    app: str
    name: str
    source: str
    values: dict[str, str]
    """Field → value for display, secrets masked."""


def check_name(name: str) -> str:
    if not re.match(NAME_PATTERN, name):
        raise ConnectionProblem(
            f"connection name {name!r} must be lowercase letters, digits and -, up to 40"
        )
    return name


def secret_fields(model: type[BaseModel]) -> set[str]:
    return {n for n, f in model.model_fields.items() if f.annotation is SecretStr}


def masked(model: BaseModel) -> dict[str, str]:
    secrets = secret_fields(type(model))
    return {
        field: MASK if field in secrets else str(value)
        for field, value in model.model_dump().items()
        if value is not None
    }


def validate(app: App, name: str, values: dict[str, Any]) -> BaseModel:
    """The app's connection model from raw values, with an error that names fields only."""
    assert app.connection is not None
    try:
        return app.connection.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'connection'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        raise ConnectionProblem(f"connection {app.name}/{name} is not valid: {problems}") from None


# --------------------------------------------------------------------------- environment


def env_prefix(app: str, name: str) -> str:
    return f"ZAPFLOW_{app}_{name}_".upper().replace("-", "_")


def from_env(app: App, name: str) -> BaseModel | None:
    """The connection from ``ZAPFLOW_<APP>_<NAME>_<FIELD>`` variables, if any are set."""
    assert app.connection is not None
    prefix = env_prefix(app.name, name)
    values = {
        field: os.environ[prefix + field.upper()]
        for field in app.connection.model_fields
        if prefix + field.upper() in os.environ
    }
    return validate(app, name, values) if values else None


def env_connections(apps: dict[str, App]) -> list[tuple[App, str]]:
    found = set()
    for key in os.environ:
        for app in apps.values():
            if app.connection is None or not key.startswith(f"ZAPFLOW_{app.name.upper()}_"):
                continue
            rest = key[len(f"ZAPFLOW_{app.name.upper()}_") :]
            for field in app.connection.model_fields:
                if rest.endswith("_" + field.upper()):
                    found.add((app.name, rest[: -len(field) - 1].lower().replace("_", "-")))
    return [(apps[a], n) for a, n in sorted(found)]


# --------------------------------------------------------------------------- Prefect blocks


@cache
def _legacy_block_class() -> Any:
    """The one generic block type connections were stored as before each app had its own
    (read only, to move them: ``migrate_legacy``)."""
    from prefect.blocks.core import Block
    from prefect.blocks.fields import SecretDict

    class ZapflowConnection(Block):
        """Credentials of one app account, used by zapflow zaps (the old, generic form)."""

        _block_type_name = "zapflow connection"
        _block_type_slug = LEGACY_SLUG
        _description = "Old form of zapflow connections: moved to each app's own block type."

        app: str
        name: str
        settings: dict[str, Any] = {}
        secrets: SecretDict = SecretDict({})

    return ZapflowConnection


def legacy_block_name(app: str, name: str) -> str:
    return f"{app.replace('_', '-')}--{name}"


async def load_block(app: App, name: str) -> BaseModel | None:
    """The connection stored on the Prefect server as a block of the app's type (one stored in
    the old generic form is moved to it first), or None."""
    from prefect.exceptions import ObjectNotFound

    from flows.connection_blocks import block_class, values_of

    try:
        block = await block_class(app).aload(name)
    except (ValueError, ObjectNotFound):
        if not await _move_legacy(app, name):
            return None
        block = await block_class(app).aload(name)
    return validate(app, name, values_of(block, app))


async def save_block(app: App, name: str, connection: BaseModel, *, overwrite: bool) -> None:
    from flows.connection_blocks import block_of

    await block_of(app, connection).asave(name, overwrite=overwrite)
    _cache.pop((app.name, name), None)


async def delete_block(app: App, name: str) -> bool:
    from flows.connection_blocks import block_type_slug

    deleted = await _delete_document(block_type_slug(app.name), name)
    # One still in the old generic form goes too.
    deleted = await _delete_document(LEGACY_SLUG, legacy_block_name(app.name, name)) or deleted
    _cache.pop((app.name, name), None)
    return deleted


async def _delete_document(slug: str, name: str) -> bool:
    """Delete the block document ``name`` of block type ``slug``; False if there is none."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        try:
            doc = await client.read_block_document_by_name(name, block_type_slug=slug)
        except ObjectNotFound:
            return False
        await client.delete_block_document(doc.id)
    return True


async def register_block_types(apps: dict[str, App]) -> None:
    """Register each app's connection block type with the Prefect server, so its UI's Blocks
    page offers a form for each app before any connection of it is saved."""
    from flows.connection_blocks import block_class

    for app in apps.values():
        if app.connection is not None:
            await block_class(app).aregister_type_and_schema()


async def _documents(slug: str, *, secrets: bool) -> list[Any]:
    """The block documents of one block type ([] when the server has no such type yet)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    async with get_client() as client:
        try:
            return list(await client.read_block_documents_by_type(slug, include_secrets=secrets))
        except ObjectNotFound:
            return []
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code == 404:  # a fresh server: no connection saved yet
                return []
            raise


async def _move_legacy(app: App, name: str) -> bool:
    """Move one connection stored in the old generic form to the app's block type."""
    from prefect.exceptions import ObjectNotFound

    try:
        old = await _legacy_block_class().aload(legacy_block_name(app.name, name))
    except (ValueError, ObjectNotFound):
        return False
    values = {**old.settings, **old.secrets.get_secret_value()}
    await save_block(app, name, validate(app, name, values), overwrite=False)
    await _delete_document(LEGACY_SLUG, legacy_block_name(app.name, name))
    return True


async def migrate_legacy(apps: dict[str, App]) -> list[str]:
    """Move every connection stored in the old generic form to its app's block type; returns
    ``app/name`` of each moved (one that does not fit its app's model is left, and named)."""
    moved: list[str] = []
    for doc in await _documents(LEGACY_SLUG, secrets=False):
        app = apps.get(str(doc.data.get("app")))
        name = str(doc.data.get("name"))
        if app is None or app.connection is None:
            continue
        try:
            if await _move_legacy(app, name):
                moved.append(f"{app.name}/{name}")
        except ConnectionProblem as exc:
            log.warning("connection %s/%s was not moved to its block type: %s", app.name, name, exc)
    return moved


async def block_connections(apps: dict[str, App]) -> list[ConnectionInfo]:
    """Every connection stored on the Prefect server, secrets masked."""
    from flows.connection_blocks import block_type_slug

    out = []
    for app in apps.values():
        if app.connection is None:
            continue
        secrets = secret_fields(app.connection)
        for doc in await _documents(block_type_slug(app.name), secrets=False):
            values = {
                k: MASK if k in secrets else str(doc.data[k])
                for k in app.connection.model_fields
                if k in doc.data and doc.data[k] is not None
            }
            out.append(ConnectionInfo(app.name, str(doc.name), "prefect", values))
    return out


# --------------------------------------------------------------------------- resolving


async def resolve(app: App, name: str) -> BaseModel:
    """The connection a step uses: environment first, then the Prefect block (cached ~30 s)."""
    connection = from_env(app, name)  # cheap, and must take effect at once: never cached
    if connection is not None:
        return connection
    cached = _cache.get((app.name, name))
    if cached and time.monotonic() - cached[0] < _CACHE_SECONDS:
        return cached[1]
    if connection is None:
        try:
            connection = await load_block(app, name)
        except ConnectionProblem:
            raise
        except Exception as exc:  # server down, API error: say what could not be read
            raise ConnectionProblem(
                f"could not read connection {app.name}/{name} from the Prefect server: "
                f"{type(exc).__name__}"
            ) from None
    if connection is None:
        raise ConnectionProblem(
            f"there is no {app.title} connection named {name!r}: create it with "
            f"`zapflow connect {app.name} {name}` or set {env_prefix(app.name, name)}<FIELD> "
            "variables"
        )
    _cache[(app.name, name)] = (time.monotonic(), connection)
    return connection


def forget(app: str, name: str) -> None:
    """Drop a cached connection (after the app rejected it, or it was changed)."""
    _cache.pop((app, name), None)
