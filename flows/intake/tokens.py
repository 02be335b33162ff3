"""Hook tokens (the secret part of each hook URL) and the calls an app account made under its
shared API rate limit: small tables of the inbox that receivers and apps share."""

from __future__ import annotations

import secrets
import zlib
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from connectors._rates import Rate
from flows.intake.db import (
    InboxBase,
    _now,
    hook_tokens,
    rate_use,
)


class HookTokens(InboxBase):
    """Hook tokens and shared rate counts of the inbox."""

    async def hook_token(self, kind: str, name: str) -> str:
        """The secret token in the URL of a webhook (``kind``: e.g. ``cinnox``, ``catch``).

        Created on first use, then the same for good (across restarts) until rotated.
        """
        select = sa.select(hook_tokens.c.token).where(
            hook_tokens.c.kind == kind, hook_tokens.c.name == name
        )
        async with self._engine.connect() as conn:
            token = (await conn.execute(select)).scalar_one_or_none()
        if token is not None:
            return token
        insert = postgresql.insert if self._is_postgresql else sqlite.insert
        async with self._write_engine.begin() as conn:
            # Two processes may create it at once: the first insert wins, both read it back.
            await conn.execute(
                insert(hook_tokens)
                .values(kind=kind, name=name, token=secrets.token_urlsafe(32), created_at=_now())
                .on_conflict_do_nothing(index_elements=["kind", "name"])
            )
            return (await conn.execute(select)).scalar_one()

    async def rotate_hook_token(self, kind: str, name: str) -> str:
        """Replace a webhook's token (the old URL stops working); returns the new one."""
        token = secrets.token_urlsafe(32)
        insert = postgresql.insert if self._is_postgresql else sqlite.insert
        stmt = insert(hook_tokens).values(kind=kind, name=name, token=token, created_at=_now())
        stmt = stmt.on_conflict_do_update(
            index_elements=["kind", "name"],
            set_={"token": stmt.excluded.token, "created_at": stmt.excluded.created_at},
        )
        async with self._write_engine.begin() as conn:
            await conn.execute(stmt)
        return token

    # -- app rate limits (connectors._rates' shared store) -----------------------------------

    async def take_rate(self, key: str, rate: Rate, n: int = 1) -> tuple[int, float]:
        """Take up to ``n`` calls of account ``key`` under ``rate`` now: at most
        ``rate.count`` calls in any ``rate.per`` seconds, counted across every process sharing
        this inbox. Returns how many were taken and, when fewer than ``n``, in how many seconds
        the next one frees up."""
        now = _now()
        since = now - timedelta(seconds=rate.per)
        async with self._write_engine.begin() as conn:
            if self._is_postgresql:  # one counter at a time per account (SQLite: the write lock)
                await conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"),
                    {"key": zlib.crc32(f"zapflow.rate:{key}".encode())},
                )
            await conn.execute(
                rate_use.delete().where(rate_use.c.key == key, rate_use.c.at <= since)
            )
            used, oldest = (
                await conn.execute(
                    sa.select(sa.func.count(), sa.func.min(rate_use.c.at)).where(
                        rate_use.c.key == key
                    )
                )
            ).one()
            taken = max(0, min(n, rate.count - used))
            if taken:
                await conn.execute(rate_use.insert(), [{"key": key, "at": now}] * taken)
        if taken == n:
            return taken, 0.0
        # Full: the oldest call leaves the window first (at least a millisecond from now).
        frees = (oldest - since).total_seconds() if oldest is not None else rate.per
        return taken, max(0.001, frees)
