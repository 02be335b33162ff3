"""The inbox's database: its tables (``flows.intake.inbox`` says what each holds), engines
(SQLite in WAL mode, or PostgreSQL) and Alembic migrations; the records its parts pass
around; and ``InboxBase``, the connection every part of the inbox works through."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from connectors._errors import ZapError
from connectors._rates import Rate
from flows.events import Event

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "zapflow_inbox_version"

PENDING, CLAIMED, PARKED, DONE = "pending", "claimed", "parked", "done"
RUNNING, ABANDONED, WAITING = "running", "abandoned", "waiting"
HELD, DISCARDED, QUEUED = "held", "discarded", "queued"
FAR = datetime(9999, 12, 31, tzinfo=UTC)
"""When an event whose runs are only held becomes claimable on its own: never."""
CLAIMABLE = "state <> 'done' AND state <> 'parked'"
PARKED_ONLY = "state = 'parked'"
QUEUED_ONLY = "state = 'queued'"
"""The claim's condition, written as the claim index's WHERE clause: SQLite and PostgreSQL use
a partial index only when the query repeats its condition."""

# Waiting this long for SQLite's write lock (another process committing, a long purge chunk)
# beats failing an acknowledgement; a lock held longer than this means something is wrong.
BUSY_TIMEOUT_MS = 10_000
# Bound parameters per statement stay well under SQLite's (32,766) and asyncpg's (32,767) limits.
CHUNK = 1000
# Any constant will do: it only has to be the same for every zapflow process migrating one
# PostgreSQL database, so that two processes opening a fresh inbox at once do not race.
_MIGRATION_LOCK = zlib.crc32(b"zapflow.inbox.migrations")
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def _startable(row: Any, now: datetime) -> bool:
    """Whether a run with this ledger row (None: no row yet) would start if claimed now."""
    if row is None or row.state in (ABANDONED, QUEUED):
        return True
    return bool(row.state == WAITING and row.resume_at is not None and row.resume_at <= now)


@dataclass(frozen=True)
class Gate:
    """A zap's limits on starting runs, held across every dispatcher sharing the inbox: at most
    ``concurrency`` running at once, at most ``rate`` started in any period."""

    concurrency: int | None = None
    rate: Rate | None = None

    def describe(self) -> str:
        limits = []
        if self.concurrency is not None:
            limits.append(f"concurrency {self.concurrency}")
        if self.rate is not None:
            limits.append(f"rate_limit {self.rate}")
        return "queued: waits for a free slot (" + ", ".join(limits) + ")"


class InboxError(ZapError):
    """The inbox cannot be opened or used as asked (bad URL, unknown schema revision …)."""


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend.

    SQLite has no time zone type: values are stored as naive UTC text, which compares correctly
    as text, and come back marked UTC. Naive datetimes given to the inbox are taken as UTC.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# The tables as the queries see them. The migrations own the schema; a test checks that the
# two agree (alembic's compare_metadata finds no difference).
metadata = sa.MetaData()

events = sa.Table(
    "zapflow_events",
    metadata,
    sa.Column(
        "seq",
        # SQLite only autoincrements an INTEGER PRIMARY KEY (its rowid).
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("id", sa.Text(), nullable=False),
    sa.Column("app", sa.Text(), nullable=False),
    sa.Column("trigger", sa.Text(), nullable=False),
    sa.Column("connection", sa.Text(), nullable=True),
    sa.Column("zap", sa.Text(), nullable=True),
    sa.Column("payload", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    sa.Column("state", sa.Text(), nullable=False),
    sa.Column("claimed_by", sa.Text(), nullable=True),
    sa.Column("available_at", UTCDateTime(), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("done_at", UTCDateTime(), nullable=True),
    sa.UniqueConstraint("id", name="uq_zapflow_events_id"),
    sa.CheckConstraint(
        "state IN ('pending', 'claimed', 'parked', 'done')", name="ck_zapflow_events_state"
    ),
    sa.Index(
        "ix_zapflow_events_waiting",
        "seq",
        sqlite_where=sa.text(CLAIMABLE),
        postgresql_where=sa.text(CLAIMABLE),
    ),
    sa.Index("ix_zapflow_events_done", "state", "done_at"),
    sa.Index(
        "ix_zapflow_events_parked",
        "available_at",
        sqlite_where=sa.text("state = 'parked'"),
        postgresql_where=sa.text("state = 'parked'"),
    ),
    # Seqs are never reused after a purge, so "oldest first" stays true for good.
    sqlite_autoincrement=True,
)

runs = sa.Table(
    "zapflow_runs",
    metadata,
    sa.Column("event_id", sa.Text(), primary_key=True),
    sa.Column("zap", sa.Text(), primary_key=True),
    sa.Column("state", sa.Text(), nullable=False),
    sa.Column("flow_run_id", sa.Text(), nullable=True),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime(), nullable=True),
    sa.Column("failing_step", sa.Text(), nullable=True),
    sa.Column("message", sa.Text(), nullable=True),
    sa.Column("worker", sa.Text(), nullable=True),
    sa.Column("resume_at", UTCDateTime(), nullable=True),
    sa.Column("zap_version", sa.Text(), nullable=True),
    sa.Column("autoreplays", sa.Integer(), nullable=False, server_default=sa.text("0")),
    sa.Index("ix_zapflow_runs_started", "started_at"),
    sa.Index("ix_zapflow_runs_zap_state", "zap", "state", "started_at"),
    sa.Index(
        "ix_zapflow_runs_queued",
        "zap",
        "started_at",
        sqlite_where=sa.text(QUEUED_ONLY),
        postgresql_where=sa.text(QUEUED_ONLY),
    ),
    sa.Index(
        "ix_zapflow_runs_waiting",
        "resume_at",
        sqlite_where=sa.text("state = 'waiting'"),
        postgresql_where=sa.text("state = 'waiting'"),
    ),
)

steps = sa.Table(
    "zapflow_steps",
    metadata,
    sa.Column("event_id", sa.Text(), primary_key=True),
    sa.Column("zap", sa.Text(), primary_key=True),
    sa.Column("step", sa.Text(), primary_key=True),
    sa.Column("status", sa.Text(), nullable=False),
    sa.Column("output", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True),
    sa.Column("finished_at", UTCDateTime(), nullable=False),
    sa.CheckConstraint(
        "status IN ('completed', 'skipped', 'waiting')", name="ck_zapflow_steps_status"
    ),
)

rate_use = sa.Table(
    "zapflow_rate_use",
    metadata,
    sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("key", sa.Text(), nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Index("ix_zapflow_rate_use_key_at", "key", "at"),
)

zap_versions = sa.Table(
    "zapflow_zap_versions",
    metadata,
    sa.Column("version", sa.Text(), primary_key=True),
    sa.Column("zap", sa.Text(), nullable=False),
    sa.Column(
        "definition", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
    ),
    sa.Column("git_revision", sa.Text(), nullable=True),
    sa.Column("first_seen", UTCDateTime(), nullable=False),
)

workers = sa.Table(
    "zapflow_workers",
    metadata,
    sa.Column("worker", sa.Text(), primary_key=True),
    sa.Column("host", sa.Text(), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("seen_at", UTCDateTime(), nullable=False),
    sa.Column("role", sa.Text(), nullable=False, server_default="all"),
)

leases = sa.Table(
    "zapflow_leases",
    metadata,
    sa.Column("name", sa.Text(), primary_key=True),
    sa.Column("holder", sa.Text(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Index("ix_zapflow_leases_holder", "holder"),
)

hook_tokens = sa.Table(
    "zapflow_hook_tokens",
    metadata,
    sa.Column("kind", sa.Text(), primary_key=True),
    sa.Column("name", sa.Text(), primary_key=True),
    sa.Column("token", sa.Text(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("token", name="uq_zapflow_hook_tokens_token"),
)


poll_state = sa.Table(
    "zapflow_poll_state",
    metadata,
    sa.Column("poller", sa.Text(), primary_key=True),
    sa.Column("fingerprint", sa.Text(), nullable=False),
    sa.Column("cursor", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True),
    sa.Column("last_polled_at", UTCDateTime(), nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("last_error_at", UTCDateTime(), nullable=True),
    sa.Column("failures", sa.Integer(), nullable=False),
)

poll_seen = sa.Table(
    "zapflow_poll_seen",
    metadata,
    sa.Column("poller", sa.Text(), primary_key=True),
    sa.Column("key", sa.Text(), primary_key=True),
    sa.Column("seen_at", UTCDateTime(), nullable=False),
    sa.Index("ix_zapflow_poll_seen_age", "poller", "seen_at"),
)

storage = sa.Table(
    "zapflow_storage",
    metadata,
    sa.Column("namespace", sa.Text(), primary_key=True),
    sa.Column("key", sa.Text(), primary_key=True),
    sa.Column("value", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)


unrecognised = sa.Table(
    "zapflow_unrecognised",
    metadata,
    sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("id", sa.Text(), nullable=False),
    sa.Column("app", sa.Text(), nullable=False),
    sa.Column("connection", sa.Text(), nullable=True),
    sa.Column("channel", sa.Text(), nullable=False),
    sa.Column("body", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    sa.Column("state", sa.Text(), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("handled_at", UTCDateTime(), nullable=True),
    sa.Column("event_ids", sa.JSON(), nullable=True),
    sa.UniqueConstraint("id", name="uq_zapflow_unrecognised_id"),
    sa.CheckConstraint("state IN ('waiting', 'reprocessed')", name="ck_zapflow_unrecognised_state"),
    sa.Index("ix_zapflow_unrecognised_state", "state", "seq"),
    sqlite_autoincrement=True,
)


def default_url() -> str:
    """The embedded default: a SQLite file in the project's state folder."""
    from flows.server import state_dir

    return f"sqlite+aiosqlite:///{state_dir() / 'inbox.db'}"


def _async_url(url: str) -> sa.URL:
    """The URL with an asyncio driver, so plain ``sqlite:///`` and ``postgresql://`` work too."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise InboxError(f"not a database URL: {url!r}") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:") or "mode=memory" in str(parsed):
            raise InboxError("the inbox must be a SQLite file, not an in-memory database")
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg")
    raise InboxError(f"the inbox runs on SQLite or PostgreSQL, not {backend!r}")


def _switch_to_wal(cursor: Any) -> None:
    """``PRAGMA journal_mode=WAL``, retried: on a new file, while another connection is making
    the same switch, SQLite answers "database is locked" at once instead of waiting."""
    for attempt in range(100):
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 99:
                raise
            time.sleep(0.02)


def make_engine(url: str, schema: str | None = None, *, checkpoints: bool = True) -> AsyncEngine:
    """An engine set up for durability: WAL + synchronous=FULL on SQLite, on every connection."""
    parsed = _async_url(url)
    if parsed.get_backend_name() == "postgresql":
        # The schema is chosen per connection, so every table and Alembic's version table live
        # in it without qualifying a single name.
        connect_args = {"server_settings": {"search_path": schema}} if schema else {}
        return create_async_engine(parsed, pool_pre_ping=True, connect_args=connect_args)

    if schema is not None:
        raise InboxError("a schema can only be given for a PostgreSQL inbox")
    if parsed.database:
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(parsed)

    @sa.event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let us emit BEGIN ourselves (below): the driver's own transaction handling would
        # start deferred transactions, which fail at once instead of waiting when two writers
        # meet in WAL mode.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # First, so that switching a new file to WAL waits for a lock held by another opener.
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        _switch_to_wal(cursor)
        # FULL: a commit is fsynced before it returns, so an acknowledged event survives a
        # power cut (NORMAL would only survive a process crash).
        cursor.execute("PRAGMA synchronous=FULL")
        if not checkpoints:
            # Leave folding the WAL into the database to other connections (the dispatcher's):
            # the commit that crosses the threshold runs the checkpoint before it returns.
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()

    @sa.event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # Writers take the write lock up front (and wait for it under busy_timeout); readers
        # stay deferred so they never queue behind the writer.
        immediate = conn.get_execution_options().get("zapflow_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _alembic_config() -> Config:
    from alembic.config import Config

    cfg = Config()
    # Config values are %-interpolated.
    cfg.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    cfg.set_main_option("path_separator", "os")
    return cfg


def _migrate(conn: sa.Connection, schema: str | None) -> tuple[str, ...]:
    """Bring the schema to the newest revision inside the caller's transaction.

    Returns the revisions applied, oldest first (none when the database was up to date).
    """
    # Alembic (~11 MB) is imported only by the processes that migrate, not the receiver's.
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    if conn.dialect.name == "postgresql":
        # Serialise concurrent openers; SQLite's BEGIN IMMEDIATE already does.
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        if schema:
            conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    cfg = _alembic_config()
    script = ScriptDirectory.from_config(cfg)
    head = script.get_current_head()
    current = MigrationContext.configure(
        conn, opts={"version_table": VERSION_TABLE}
    ).get_current_revision()
    if current == head:
        return ()
    try:
        pending = list(script.iterate_revisions(head, current or "base"))
    except CommandError as exc:
        raise InboxError(
            f"the inbox database is at schema revision {current!r}, which this version of "
            "zapflow does not know (was it opened by a newer zapflow?)"
        ) from exc
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")
    return tuple(rev.revision for rev in reversed(pending))


def _chunks(seqs: Sequence[int]) -> Iterator[list[int]]:
    for start in range(0, len(seqs), CHUNK):
        yield list(seqs[start : start + CHUNK])


def _now() -> datetime:
    return datetime.now(UTC)


def _stored(row: sa.Row[Any]) -> Event:
    return Event(
        id=row.id,
        app=row.app,
        trigger=row.trigger,
        payload=row.payload,
        connection=row.connection,
        zap=row.zap,
        received_at=row.received_at,
        seq=row.seq,
        attempts=row.attempts,
    )


def _ended(result: RunResult, now: datetime) -> dict[str, Any]:
    """A ledger row's columns for a run made outside the dispatcher, ended ``now``."""
    return {
        "state": result.state,
        "flow_run_id": result.flow_run_id,
        "failing_step": result.failing_step,
        "message": result.message,
        "started_at": result.started_at or now,
        "finished_at": now,
        "zap_version": result.zap_version,
    }


def _row_specific(exc: BaseException) -> bool:
    """Whether a failed batch may have failed because of one bad row, not the database."""
    if isinstance(exc, sa.exc.IntegrityError | sa.exc.DataError):
        return True
    # A StatementError that is not a DBAPIError failed before reaching the database, while
    # binding parameters (e.g. a payload that is not JSON-serialisable).
    return isinstance(exc, sa.exc.StatementError) and not isinstance(exc, sa.exc.DBAPIError)


@dataclass
class InboxStats:
    """What the group-commit writer did, for tests, benchmarks and health pages."""

    commits: int = 0
    """Transactions that wrote puts (each a single fsync on SQLite)."""
    events: int = 0
    """Events offered to those transactions (duplicates included)."""
    new: int = 0
    """Events that were new."""
    largest_batch: int = 0


@dataclass(frozen=True)
class StepOutcome:
    """One step of one zap run, done: ``completed`` with its output, or ``skipped``."""

    event_id: str
    zap: str
    step: str
    status: str
    output: Any = None


@dataclass(frozen=True)
class RunResult:
    """How one (event, zap) run ended, for :meth:`Inbox.finish_runs`."""

    event_id: str
    zap: str
    state: str
    flow_run_id: str | None = None
    failing_step: str | None = None
    message: str | None = None
    started_at: datetime | None = None
    """When the run started (``record_run``; ``finish_runs`` keeps the ledger's own)."""
    resume_at: datetime | None = None
    """A ``waiting`` run's resume time (it is parked in a delay until then)."""
    zap_version: str | None = None
    """The version of the zap that ran (``flows.model.zap_version``)."""
    autoreplays: int | None = None
    """How many times the run has been autoreplayed (None: unchanged)."""
    steps: Sequence[StepOutcome] = ()
    """Step checkpoints committed with this row (a parked run's last ones)."""


@dataclass(frozen=True)
class LedgerRun:
    """One row of the run ledger, as ``zapflow runs`` shows it."""

    event_id: str
    zap: str
    state: str
    flow_run_id: str | None
    started_at: datetime
    finished_at: datetime | None
    failing_step: str | None
    message: str | None
    app: str | None
    trigger: str | None
    resume_at: datetime | None = None
    zap_version: str | None = None
    autoreplays: int = 0


@dataclass
class _Put:
    event: Event
    future: asyncio.Future[bool]


_STOP = object()


def event_rows(new: Sequence[Event], now: datetime) -> list[dict[str, Any]]:
    """The events table's rows of new events, claimable from ``now``."""
    return [
        {
            "id": e.id,
            "app": e.app,
            "trigger": e.trigger,
            "connection": e.connection,
            "zap": e.zap,
            "payload": e.payload,
            "received_at": e.received_at,
            "state": PENDING,
            "available_at": now,
            "attempts": 0,
        }
        for e in new
    ]


def unpark(ids: Any, now: datetime) -> sa.Update:
    """Parked events among ``ids`` (a list or a subquery) become claimable now."""
    return (
        events.update()
        .where(events.c.id.in_(ids), events.c.state == PARKED)
        .values(state=PENDING, available_at=now)
    )


EVENTS_CHANNEL = "zapflow_events:"
"""The PostgreSQL notification channel of new events, followed by the inbox's schema."""


class InboxBase:
    """The inbox's engines and settings, shared by its parts (event queue, run ledger,
    hook tokens); ``flows.intake.inbox.Inbox`` puts them together."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        batch_max: int,
        batch_wait: float,
        applied_migrations: tuple[str, ...] = (),
    ) -> None:
        """Use :meth:`open`, which also migrates the schema and starts the writer."""
        if batch_max < 1:
            raise ValueError("batch_max must be at least 1")
        self._engine = engine
        # The same pool, but transactions begin with the write lock on SQLite (see _on_begin).
        self._write_engine = engine.execution_options(zapflow_write=True)
        self._is_postgresql = engine.dialect.name == "postgresql"
        self._batch_max = batch_max
        self._batch_wait = batch_wait
        self._queue: asyncio.Queue[_Put | object] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._closed = False
        self._arrived = asyncio.Event()
        self.stats = InboxStats()
        self.applied_migrations = applied_migrations
        """Schema revisions this open applied, oldest first; empty if it was up to date."""

    @property
    def engine(self) -> AsyncEngine:
        """The inbox's database engine, for diagnostics and tests."""
        return self._engine

    def describe(self) -> str:
        """Where the inbox is, for people (its URL without any password)."""
        return self._engine.url.render_as_string(hide_password=True)

    @property
    def write_engine(self) -> AsyncEngine:
        """The engine to write with (on SQLite its transactions take the write lock at once),
        for modules that keep tables of their own in the inbox (``pollers``)."""
        return self._write_engine

    async def _insert_events(self, conn: AsyncConnection, new: Sequence[Event]) -> set[str]:
        """Insert events (those whose id is already there are left alone); the new ids."""
        insert = postgresql.insert if self._is_postgresql else sqlite.insert
        stmt = insert(events).on_conflict_do_nothing(index_elements=["id"]).returning(events.c.id)
        # Claimable from now: not from received_at, which a sender's or poller's clock set.
        now = _now()
        rows = event_rows(new, now)
        # One executemany; SQLAlchemy sends it as multi-row INSERTs and gathers RETURNING.
        result = await conn.execute(stmt, rows)
        new_ids = set(result.scalars().all())
        if new_ids and self._is_postgresql:
            # Workers that listen (``EventQueue.listen``) claim at once, wherever they run.
            # PostgreSQL delivers the notification when this transaction commits, not before.
            await conn.execute(
                sa.text(f"SELECT pg_notify('{EVENTS_CHANNEL}' || current_schema(), '')")
            )
        return new_ids
