"""Connections: named credentials of one app account (e.g. the CINNOX account "main").

Stored as Prefect Blocks of type ``zapflow-connection``: the app's secret fields (those its
connection model types ``SecretStr``) go into the block's ``SecretDict``, which the Prefect server
encrypts at rest and never shows. They can also come from the environment (CI, containers):
``ZAPFLOW_<APP>_<NAME>_<FIELD>``, e.g. ``ZAPFLOW_CINNOX_MAIN_APP_TOKEN``; the environment wins.

Values leave this module only as the app's connection model, whose secrets are ``SecretStr``
(masked in ``repr``, logs and errors), or masked for display.
"""

from __future__ import annotations

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
BLOCK_SLUG = "zapflow-connection"
MASK = "********"
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
def _block_class() -> Any:
    from prefect.blocks.core import Block
    from prefect.blocks.fields import SecretDict

    class ZapflowConnection(Block):
        """Credentials of one app account, used by zapflow zaps."""

        _block_type_name = "zapflow connection"
        _block_type_slug = BLOCK_SLUG
        _description = "Credentials of one app account used by zapflow zaps (secrets encrypted)."

        app: str
        name: str
        settings: dict[str, Any] = {}
        secrets: SecretDict = SecretDict({})

    return ZapflowConnection


def block_name(app: str, name: str) -> str:
    return f"{app.replace('_', '-')}--{name}"


async def load_block(app: App, name: str) -> BaseModel | None:
    from prefect.exceptions import ObjectNotFound

    try:
        block = await _block_class().aload(block_name(app.name, name))
    except (ValueError, ObjectNotFound):
        return None
    return validate(app, name, {**block.settings, **block.secrets.get_secret_value()})


async def save_block(app: App, name: str, connection: BaseModel, *, overwrite: bool) -> None:
    secrets = secret_fields(type(connection))
    plain = connection.model_dump()
    block = _block_class()(
        app=app.name,
        name=name,
        settings={k: v for k, v in plain.items() if k not in secrets and v is not None},
        secrets={k: getattr(connection, k).get_secret_value() for k in secrets},
    )
    await block.asave(block_name(app.name, name), overwrite=overwrite)
    _cache.pop((app.name, name), None)


async def delete_block(app: App, name: str) -> bool:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        try:
            doc = await client.read_block_document_by_name(
                block_name(app.name, name), block_type_slug=BLOCK_SLUG
            )
        except ObjectNotFound:
            return False
        await client.delete_block_document(doc.id)
    _cache.pop((app.name, name), None)
    return True


async def block_connections(apps: dict[str, App]) -> list[ConnectionInfo]:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    async with get_client() as client:
        try:
            docs = await client.read_block_documents_by_type(BLOCK_SLUG, include_secrets=False)
        except ObjectNotFound:
            return []
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code == 404:  # a fresh server: no connection saved yet
                return []
            raise
    out = []
    for doc in docs:
        data = doc.data
        app = apps.get(str(data.get("app")))
        settings = data.get("settings", {})
        values = {k: str(v) for k, v in settings.items()}
        if app is not None and app.connection is not None:
            secrets = secret_fields(app.connection)
            values = {
                k: MASK if k in secrets else str(settings[k])
                for k in app.connection.model_fields
                if k in secrets or k in settings
            }
        out.append(ConnectionInfo(str(data.get("app")), str(data.get("name")), "prefect", values))
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
