"""Inboxes on real databases for the tests that use one: a SQLite file, and PostgreSQL when
``ZAPFLOW_TEST_POSTGRES_URL`` is set (e.g. ``postgresql+asyncpg://postgres@127.0.0.1:5432/test``);
each test gets a schema of its own there, dropped afterwards, so runs never see each other's rows.

A test module takes the ``backend`` fixture with ``pytest_plugins = ["inbox_fixtures"]``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from flows.intake.inbox import Inbox

PG_URL = os.environ.get("ZAPFLOW_TEST_POSTGRES_URL")
PG_SKIP = (
    "PostgreSQL inbox tests need ZAPFLOW_TEST_POSTGRES_URL, "
    "e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


@dataclass
class Backend:
    """One database to test on; opens inboxes on it and closes them after the test."""

    name: str
    url: str
    schema: str | None = None
    opened: list[Inbox] = field(default_factory=list)

    async def open(self, **kwargs: Any) -> Inbox:
        inbox = await Inbox.open(self.url, schema=self.schema, **kwargs)
        self.opened.append(inbox)
        return inbox


@pytest.fixture(params=["sqlite", "postgresql"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        db = Backend("sqlite", f"sqlite+aiosqlite:///{tmp_path / 'inbox.db'}")
    else:
        if not PG_URL:
            pytest.skip(PG_SKIP)
        db = Backend("postgresql", PG_URL, schema=f"zapflow_test_{uuid.uuid4().hex[:12]}")
    yield db
    for inbox in db.opened:
        await inbox.close()
    if db.schema is not None:
        assert PG_URL is not None
        engine = create_async_engine(sa.make_url(PG_URL).set(drivername="postgresql+asyncpg"))
        async with engine.begin() as conn:
            await conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{db.schema}" CASCADE')
        await engine.dispose()
