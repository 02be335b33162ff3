"""Where zaps keep values between runs: the ``zapflow_storage`` table of zapflow's own database
(the inbox's: ``$ZAPFLOW_INBOX_URL``, else ``inbox.db`` in the state folder) — the engine's side
of the storage port (``connectors._storage``), handed to actions as ``ActionContext.storage``.

Every change that depends on the value before it (increment, append, pop) reads and writes in
one transaction that holds the key: SQLite's write lock (``BEGIN IMMEDIATE``) or, on
PostgreSQL, a transaction-scoped advisory lock on the (namespace, key) — which also covers a
key no row holds yet. So concurrent steps, in one process or many, never lose an update.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from connectors._errors import PermanentError
from connectors._storage import MAX_KEYS, MISSING, Change, Missing, check_value
from flows.intake.db import default_url, make_engine, storage
from flows.intake.inbox import Inbox

_stores: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str], Store]]
_stores = weakref.WeakKeyDictionary()
_migrated: set[tuple[str, str]] = set()


def storage_url() -> str:
    """zapflow's database: the inbox's."""
    return os.environ.get("ZAPFLOW_INBOX_URL") or default_url()


async def current_store() -> Store:
    """The store of zapflow's database, for this process and event loop."""
    return await Store.open(storage_url())


@dataclass
class Store:
    """The storage table on one database."""

    engine: AsyncEngine

    @classmethod
    async def open(cls, url: str, schema: str | None = None) -> Store:
        """The store on ``url`` (its schema brought up to date once per process), shared by
        the callers in this event loop."""
        loop_stores = _stores.setdefault(asyncio.get_running_loop(), {})
        key = (url, schema or "")
        if key not in loop_stores:
            if key not in _migrated:
                await (await Inbox.open(url, schema=schema)).close()
                _migrated.add(key)
            loop_stores[key] = cls(make_engine(url, schema))
        return loop_stores[key]

    @property
    def _writes(self) -> AsyncEngine:
        # On SQLite its transactions take the write lock up front (see inbox.make_engine).
        return self.engine.execution_options(zapflow_write=True)

    async def get(self, namespace: str, key: str) -> Any:
        """The value, or MISSING."""
        async with self.engine.connect() as conn:
            return await _read(conn, namespace, key)

    async def get_all(self, namespace: str) -> dict[str, Any]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(storage.c.key, storage.c.value)
                .where(storage.c.namespace == namespace)
                .order_by(storage.c.key)
            )
            return {row.key: row.value for row in rows}

    async def change(self, namespace: str, key: str, change: Change) -> Any:
        """Apply ``change`` to the key's value atomically; return what it returns."""
        async with self._writes.begin() as conn:
            if conn.dialect.name == "postgresql":
                lock = sa.select(sa.func.pg_advisory_xact_lock(_lock_id(namespace, key)))
                await conn.execute(lock)
            current = await _read(conn, namespace, key)
            new, answer = change(current)
            if isinstance(new, Missing):
                await conn.execute(
                    storage.delete().where(storage.c.namespace == namespace, storage.c.key == key)
                )
            else:
                if isinstance(current, Missing):
                    await _check_room(conn, namespace)
                await _write(conn, namespace, key, check_value(new))
        return answer

    async def close(self) -> None:
        await self.engine.dispose()


async def _read(conn: AsyncConnection, namespace: str, key: str) -> Any:
    row = (
        await conn.execute(
            sa.select(storage.c.value).where(storage.c.namespace == namespace, storage.c.key == key)
        )
    ).first()
    return MISSING if row is None else row.value


async def _write(conn: AsyncConnection, namespace: str, key: str, value: Any) -> None:
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    now = datetime.now(UTC)
    stmt = insert(storage).values(namespace=namespace, key=key, value=value, updated_at=now)
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["namespace", "key"],
            set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at},
        )
    )


async def _check_room(conn: AsyncConnection, namespace: str) -> None:
    count = (
        await conn.execute(
            sa.select(sa.func.count()).select_from(storage).where(storage.c.namespace == namespace)
        )
    ).scalar_one()
    if count >= MAX_KEYS:
        raise PermanentError(
            f"the namespace holds {MAX_KEYS:,} keys, the most it may: delete some first"
        )


def _lock_id(namespace: str, key: str) -> int:
    """A signed 64-bit advisory lock id for the pair (a collision only serialises more)."""
    digest = hashlib.blake2b(f"{namespace}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def close_stores() -> None:
    """Close this event loop's stores (tests, shutdown)."""
    for store in _stores.pop(asyncio.get_running_loop(), {}).values():
        await store.close()
