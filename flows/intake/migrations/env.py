"""Alembic environment of the inbox's schema.

Normally run in-process by ``Inbox.open()``, which hands over its own connection (already in a
transaction holding the migration lock) through ``config.attributes["connection"]``. Also
usable from the command line to write a new revision, e.g.::

    alembic -c flows/intake/migrations/alembic.ini revision --autogenerate -m "what changes"

which compares ``flows.intake.inbox.metadata`` with the database at ``-x url=...`` (default:
the project's SQLite inbox).
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

import sqlalchemy as sa
from alembic import context

from flows.intake.db import VERSION_TABLE, default_url, make_engine, metadata

config = context.config


def run_migrations(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        # SQLite alters tables by copying them; batch mode does that for us.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_from_url(url: str) -> None:
    engine = make_engine(url)
    try:
        async with engine.execution_options(zapflow_write=True).begin() as conn:
            await conn.run_sync(run_migrations)
    finally:
        await engine.dispose()


def run_from_command_line() -> None:
    # Log what runs, as alembic.ini says; never in-process, where the application owns logging.
    if config.config_file_name is not None:
        fileConfig(config.config_file_name)
    url = context.get_x_argument(as_dictionary=True).get("url") or default_url()
    if context.is_offline_mode():
        context.configure(
            url=url, target_metadata=metadata, version_table=VERSION_TABLE, literal_binds=True
        )
        with context.begin_transaction():
            context.run_migrations()
    else:
        asyncio.run(run_from_url(url))


connection = config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:
    run_from_command_line()
