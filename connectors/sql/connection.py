"""A SQL connection: the SQLAlchemy URL of one database, which may carry a password.

Sync-style URLs (``sqlite:///shop.db``, ``postgresql://user:pw@host/db``) are mapped to the
asyncio driver zapflow ships with (aiosqlite, asyncpg). The URL is a secret as a whole: it never
shows in a repr, a validation error or a message; :func:`described` names the database without
the password.
"""

from __future__ import annotations

import re
from typing import Self

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

# The asyncio driver for URLs that name none, or name a sync one.
ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "mysql": "mysql+aiomysql",
    "mariadb": "mariadb+aiomysql",
}
SYNC_DRIVERS = {"", "pysqlite", "psycopg2", "psycopg", "pg8000", "pymysql", "mysqldb"}
SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")


def async_url(url: str) -> sa.URL:
    """``url`` with an asyncio driver; ValueError (never quoting the URL) when it is not one."""
    try:
        parsed = sa.make_url(url.strip())
    except (sa.exc.ArgumentError, ValueError):
        raise ValueError(
            "url is not a SQLAlchemy database URL, e.g. sqlite:///shop.db or "
            "postgresql://user:password@host:5432/shop"
        ) from None
    # Not get_driver_name(): without a driver it loads the dialect, which may not exist.
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ValueError("url: a SQLite database must be a file, e.g. sqlite:///shop.db")
    if driver in SYNC_DRIVERS:
        if backend not in ASYNC_DRIVERS:
            raise ValueError(
                f"url: name an asyncio driver for {backend}, e.g. {backend}+<driver>://…"
            )
        parsed = parsed.set(drivername=ASYNC_DRIVERS[backend])
    return parsed


def described(url: sa.URL) -> str:
    """The database in words, without its password: ``PostgreSQL db shop on host:5432``."""
    if url.get_backend_name() == "sqlite":
        return f"SQLite file {url.database}"
    where = f"{url.host or 'localhost'}" + (f":{url.port}" if url.port else "")
    return f"{url.get_backend_name()} database {url.database or '(default)'} on {where}"


class SqlConnection(BaseModel):
    """One database, as a SQLAlchemy URL."""

    # A rejected URL must not be quoted back: it may hold the password.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    url: SecretStr = Field(
        description="SQLAlchemy URL (secret: it may hold the password), e.g. sqlite:///shop.db "
        "or postgresql://user:password@host:5432/shop; sync drivers are mapped to "
        "aiosqlite and asyncpg. A relative SQLite path is from where zapflow runs"
    )
    schema_name: str = Field(
        "",
        description="PostgreSQL: the schema tables are looked up in (its search_path); "
        "default: the database's own (public)",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        async_url(value.get_secret_value())
        return SecretStr(value.get_secret_value().strip())

    @field_validator("schema_name")
    @classmethod
    def _schema_name(cls, value: str) -> str:
        value = value.strip()
        if value and not SCHEMA_NAME.match(value):
            raise ValueError(f"{value!r} is not a plain schema name (letters, digits and _)")
        return value

    @model_validator(mode="after")
    def _schema_on_postgresql(self) -> Self:
        if self.schema_name and self.database_url.get_backend_name() != "postgresql":
            raise ValueError("schema_name is for PostgreSQL databases only")
        return self

    @property
    def database_url(self) -> sa.URL:
        return async_url(self.url.get_secret_value())

    def secrets(self) -> list[str]:
        """Every form in which this connection's secrets could show up in a message."""
        url = self.database_url
        values = [self.url.get_secret_value(), url.render_as_string(hide_password=False)]
        if url.password:
            values.append(str(url.password))
        return [v for v in values if v]
