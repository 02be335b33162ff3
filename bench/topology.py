"""The several-machines topology as processes on this machine: Prefect's server scaled as its
docs scale it (API replicas on PostgreSQL with Redis messaging, background services apart) and
zapflow receivers and workers sharing a PostgreSQL inbox. Used by ``bench_topology.py`` and
``tests/test_topology.py``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from procs import free_port
from sqlalchemy.ext.asyncio import create_async_engine

from flows.server import SERVER_NICENESS, SERVER_SETTINGS


async def _admin(url: str, statement: str) -> list[tuple[Any, ...]]:
    """Run one statement on its own (CREATE DATABASE cannot run in a transaction); its rows."""
    engine = create_async_engine(
        sa.make_url(url).set(drivername="postgresql+asyncpg"), isolation_level="AUTOCOMMIT"
    )
    async with engine.connect() as conn:
        result = await conn.exec_driver_sql(statement)
        rows = [tuple(row) for row in result.all()] if result.returns_rows else []
    await engine.dispose()
    return rows


def transactions(url: str) -> dict[str, int]:
    """Transactions each database of the PostgreSQL server at ``url`` has committed or rolled
    back so far (``pg_stat_database``; its figures lag by up to half a second)."""
    rows = asyncio.run(
        _admin(url, "SELECT datname, xact_commit + xact_rollback FROM pg_stat_database")
    )
    return {name: int(count) for name, count in rows if name}


@contextlib.contextmanager
def fresh_databases(url: str, *prefixes: str) -> Iterator[list[str]]:
    """A new database per prefix on the PostgreSQL server at ``url`` (their URLs, as the
    machines of one installation would share them), dropped afterwards."""
    tag = uuid.uuid4().hex[:10]
    names = [f"{prefix}_{tag}" for prefix in prefixes]
    for name in names:
        asyncio.run(_admin(url, f'CREATE DATABASE "{name}"'))
    base = sa.make_url(url).set(drivername="postgresql+asyncpg")
    try:
        yield [base.set(database=n).render_as_string(hide_password=False) for n in names]
    finally:
        for name in names:
            asyncio.run(_admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


class PrefectAtScale:
    """Prefect's server the way its docs scale it: migrations once, API replicas without
    services (block types registered by the first only), the services in their own process."""

    def __init__(
        self, database: str, redis_url: str, home: Path, python: str = sys.executable
    ) -> None:
        self.python = python  # the Python that runs Prefect's processes
        redis = httpx.URL(redis_url)
        db = random.randrange(2, 16)  # a Redis database of this run's own, most likely
        self.env = {
            **os.environ,
            **SERVER_SETTINGS,  # the batching zapflow's own server runs with
            "PREFECT_HOME": str(home),
            "PREFECT_API_DATABASE_CONNECTION_URL": database,
            "PREFECT_API_DATABASE_MIGRATE_ON_START": "false",
            "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
            "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
            "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
            "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
            "PREFECT_REDIS_MESSAGING_HOST": redis.host,
            "PREFECT_REDIS_MESSAGING_PORT": str(redis.port or 6379),
            "PREFECT_REDIS_MESSAGING_DB": str(db),
            "PREFECT_SERVER_DOCKET_URL": f"redis://{redis.host}:{redis.port or 6379}/{db}",
            "PREFECT_SERVER_UI_ENABLED": "false",
        }
        self.env.pop("PREFECT_API_URL", None)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.apis: list[str] = []
        self.api_pids: list[int] = []
        self.services_pid = 0
        self.home = home

    def _start(self, *args: str, log: str, **extra: str) -> subprocess.Popen[bytes]:
        out = (self.home / log).open("wb")
        proc = subprocess.Popen(
            [self.python, "-m", "prefect", *args],
            env={**self.env, **extra},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # As zapflow runs its own Prefect server on one machine: below the receivers, above
            # the workers' runs (on several machines each has cores of its own).
            preexec_fn=lambda: os.nice(SERVER_NICENESS),
        )
        self.procs.append(proc)
        return proc

    def start(self, replicas: int = 2) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        upgrade = subprocess.run(
            [self.python, "-m", "prefect", "server", "database", "upgrade", "-y"],
            env=self.env,
            capture_output=True,
            timeout=300,
        )
        assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
        for i in range(replicas):
            port = free_port()
            url = f"http://127.0.0.1:{port}/api"
            # Replicas registering Prefect's block types at once collide on their unique slug
            # (seen here: one replica exits): the first registers them.
            proc = self._start(
                *("server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-services"),
                log=f"api{i}.log",
                PREFECT_SERVER_REGISTER_BLOCKS_ON_START="true" if i == 0 else "false",
            )
            self._wait(url, f"api{i}.log")
            self.apis.append(url)
            self.api_pids.append(proc.pid)
        self.services_pid = self._start("server", "services", "start", log="services.log").pid

    def _wait(self, url: str, log: str) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError((self.home / log).read_text()[-3000:])

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
