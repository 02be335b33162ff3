"""The durable inbox: where an accepted event waits until every matching zap has run on it.

The receiver acknowledges a delivery only after :meth:`Inbox.put` returns, and ``put`` returns
only after the event is committed, so an acknowledged event survives a crash or a power cut.
Under load, concurrent ``put`` calls are group-committed: one writer task writes whatever has
queued up in one transaction, so a burst costs a few fsyncs rather than one per event.

Dispatchers :meth:`~Inbox.claim` committed events under a lease, run the matching zaps, and mark
them :meth:`~Inbox.done` (or :meth:`~Inbox.release` them to try later). A dispatcher that dies
simply stops renewing its lease; another one reclaims the events when it expires. The
``(event, zap)`` run ledger (:meth:`~Inbox.start_run` / :meth:`~Inbox.finish_run`) is what keeps a
reclaimed event from running a zap a second time.

Storage is SQLAlchemy 2 async: by default a SQLite file ``inbox.db`` in the state folder
(``$ZAPFLOW_HOME`` or ``./.zapflow``) in WAL mode with ``synchronous=FULL``; PostgreSQL
(``postgresql+asyncpg://...``) when several processes or machines share one inbox. The schema is
owned by the Alembic migrations next to this module and is brought up to date on open.

Tables (prefixed ``zapflow_`` so the inbox can share a database, even a schema, with Prefect's
own server, which has an ``events`` table and an ``alembic_version`` table of its own):

``zapflow_events`` — one row per distinct event.
    ``seq`` (autoincrement primary key: arrival order), ``id`` (unique: the de-duplication key),
    ``app``, ``trigger``, ``connection``, ``zap`` (set when the event is for that zap only),
    ``payload`` (JSON; JSONB on PostgreSQL), ``received_at``, ``state`` (``pending`` → ``claimed``
    → ``done``, or ``parked`` while each of its runs is finished or waiting in a delay),
    ``claimed_by`` (the worker, while claimed), ``available_at`` (when the event may next be
    claimed: on arrival, when a release's delay ends, when its earliest parked run is due, or —
    while it is claimed — when the lease ends), ``attempts`` (times claimed), ``done_at``. One
    partial index on ``seq`` over the claimable events (pending or claimed) serves claiming, one
    on ``available_at`` over the parked ones wakes them when due; ``(state, done_at)`` serves
    purging.
``zapflow_runs`` — the ledger of zap runs, primary key ``(event_id, zap)``.
    ``state`` (``running``; then how it ended — ``completed``, ``filtered``, ``failed``,
    ``cancelled`` …, all final — or ``abandoned``: it did not run and may be started again,
    ``waiting``: parked in a delay until ``resume_at``, ``queued``: waiting for a slot of its
    zap's ``concurrency`` or ``rate_limit``, ``held`` by flood protection), ``flow_run_id``
    (the Prefect flow run that recorded it), ``started_at``, ``finished_at``, ``failing_step``
    and ``message`` (why it failed or was filtered), ``worker`` (the dispatcher running it:
    ``host:pid:start``), ``resume_at`` (kept after the run went on). Indexed by ``started_at``
    for ``zapflow runs``, by ``resume_at`` over the waiting runs for ``zapflow runs
    --waiting``, and by ``(zap, state, started_at)`` for the limits that count a zap's running
    and recent runs.
``zapflow_steps`` — step checkpoints (``flows.intake.checkpoints``), primary key
    ``(event_id, zap, step)``: ``status`` (``completed``, ``skipped``, or ``waiting``: the delay
    step a parked run waits in, its ``output`` holding the resume time), ``output`` (JSON),
    ``finished_at``.
``zapflow_workers`` — dispatchers' heartbeats: ``worker`` (``host:pid:start``), ``host``,
    ``started_at``, ``seen_at``.
``zapflow_zap_versions`` — each version of each zap that ran, once: ``version`` (primary key:
    a hash of the zap's content, as ``zapflow_runs.zap_version`` and the Prefect flow run's
    version say), ``zap``, ``definition`` (JSON), ``git_revision`` (of the zap folder, when it
    is in git), ``first_seen``. ``zapflow replay --zap-version recorded`` reads it.
``zapflow_rate_use`` — the calls an app account made under its API rate limit
    (``connectors._rates``): ``seq``, ``key`` (the account), ``at``; rows older than the
    limit's period are deleted as calls are counted. Indexed by ``(key, at)``.
``zapflow_hook_tokens`` — primary key ``(kind, name)``, ``token`` (unique), ``created_at``.
``zapflow_poll_state`` — one row per polling or schedule trigger (``flows.intake.pollers``),
    primary key ``poller`` (the zap id). ``fingerprint`` (of the trigger settings the row is
    for: changed settings start afresh), ``cursor`` (JSON: where the next poll starts; for a
    schedule, the last moment fired), ``last_polled_at`` (last successful poll; NULL until the
    first), ``last_error``, ``last_error_at`` and ``failures`` (consecutive failed polls).
``zapflow_poll_seen`` — the items a poller has seen, primary key ``(poller, key)`` (the key is
    a hash of the item's dedupe key), ``seen_at`` (when a poll last returned it; keys not seen
    for a while are forgotten). Indexed by ``(poller, seen_at)``.
``zapflow_storage`` — what zaps keep between runs (``connectors.storage``), primary key
    ``(namespace, key)``; ``value`` (JSON; JSONB on PostgreSQL), ``updated_at``.
``zapflow_unrecognised`` — deliveries from an authenticated sender that its app could not read
    yet (``flows.intake.unrecognised``): ``seq``, ``id`` (unique), ``app``, ``connection``,
    ``channel`` (the hook URL's last segment), ``body`` (JSON, as delivered), ``reason``,
    ``received_at``, ``state`` (``waiting`` until reprocessed into events, then
    ``reprocessed``), ``attempts`` (reprocessing tries), ``handled_at`` and ``event_ids`` (JSON:
    the events reprocessing made). Retention purges only reprocessed ones. Indexed by
    ``(state, seq)``.
``zapflow_inbox_version`` — Alembic's version table.

All times are UTC and come from the clock of the process calling the inbox, so machines that
share a PostgreSQL inbox need synchronised clocks (NTP) for leases to mean the same to all.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import sqlite3
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from connectors._errors import ZapError
from connectors._rates import Rate
from flows.intake.events import NewEvent, StoredEvent, check_depth

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


def _stored(row: sa.Row[Any]) -> StoredEvent:
    return StoredEvent(
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
    event: NewEvent
    future: asyncio.Future[bool]


_STOP = object()


class Inbox:
    """A durable, de-duplicating event store shared by receivers and dispatchers.

    Open with ``await Inbox.open(url)``; close with ``await inbox.close()`` (or ``async with``).
    One instance serves a whole process: its writer task group-commits every ``put``.
    """

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

    @classmethod
    async def open(
        cls,
        url: str | None = None,
        *,
        batch_max: int = 500,
        batch_wait: float = 0.002,
        schema: str | None = None,
        checkpoints: bool = True,
        migrate: bool = True,
    ) -> Inbox:
        """Open (creating or upgrading as needed) the inbox at ``url``, or the default one.

        ``schema`` (PostgreSQL only) keeps the inbox's tables in that schema, created if
        missing. ``batch_max`` and ``batch_wait`` tune group commit: at most that many events
        per transaction, and how long the writer waits for company once one event is waiting.
        ``checkpoints=False`` (SQLite): this process's commits never fold the write-ahead log
        into the database file, so they never wait for it; another process must (the
        dispatcher's inbox does, with the default). ``migrate=False``: the schema is known to
        be current (another process of this zapflow opened it first).
        """
        if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
            raise InboxError(f"not a plain schema name: {schema!r}")
        engine = make_engine(url or default_url(), schema, checkpoints=checkpoints)
        applied: tuple[str, ...] = ()
        try:
            if migrate:
                async with engine.execution_options(zapflow_write=True).begin() as conn:
                    applied = await conn.run_sync(_migrate, schema)
        except BaseException:
            await engine.dispose()
            raise
        inbox = cls(engine, batch_max=batch_max, batch_wait=batch_wait, applied_migrations=applied)
        inbox._writer = asyncio.create_task(inbox._write_loop(), name="zapflow-inbox-writer")
        return inbox

    @property
    def engine(self) -> AsyncEngine:
        """The inbox's database engine, for diagnostics and tests."""
        return self._engine

    @property
    def write_engine(self) -> AsyncEngine:
        """The engine to write with (on SQLite its transactions take the write lock at once),
        for modules that keep tables of their own in the inbox (``pollers``)."""
        return self._write_engine

    async def __aenter__(self) -> Inbox:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Write every put already made, then release the database."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            await self._queue.put(_STOP)
            await self._writer
        await self._engine.dispose()

    # -- accepting events ------------------------------------------------------------------

    async def put(self, event: NewEvent) -> bool:
        """Store an event; return once it is committed: True if new, False if a duplicate.

        Raises the database's error if the commit failed: the event must then not be
        acknowledged (the sender will deliver it again).
        """
        self._check_open()
        check_depth(event.payload)  # TooDeep: what cannot be recorded is not accepted
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Put(event, future))
        return await future

    async def put_many(self, events: list[NewEvent]) -> list[bool]:
        """Store several events (committed together when they fit one batch), in order."""
        self._check_open()
        for event in events:
            check_depth(event.payload)
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[bool]] = []
        for event in events:
            future: asyncio.Future[bool] = loop.create_future()
            self._queue.put_nowait(_Put(event, future))
            futures.append(future)
        return list(await asyncio.gather(*futures))

    def _check_open(self) -> None:
        if self._closed:
            raise InboxError("the inbox is closed")
        if self._writer is None or self._writer.done():
            # Only a bug (or the loop shutting down) ends the writer; fail rather than hang.
            raise InboxError("the inbox's writer is not running")

    async def wait_for_events(self, timeout: float) -> bool:
        """Wait until a put in this process committed a new event, or ``timeout`` passes.

        Lets a dispatcher in the same process start on an event at once instead of polling;
        events put by other processes are only seen by claiming, so keep the timeout short.
        Returns whether new events arrived.
        """
        try:
            await asyncio.wait_for(self._arrived.wait(), timeout)
        except TimeoutError:
            return False
        self._arrived.clear()
        return True

    async def _write_loop(self) -> None:
        """The one writer: take what is queued (waiting briefly for more), commit it at once."""
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is _STOP:
                break
            assert isinstance(first, _Put)
            batch = [first]
            deadline = loop.time() + self._batch_wait
            while len(batch) < self._batch_max:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self._queue.get(), remaining)
                    except TimeoutError:
                        break
                if item is _STOP:
                    stopping = True
                    break
                assert isinstance(item, _Put)
                batch.append(item)
            await self._write(batch)

    async def _write(self, batch: list[_Put]) -> None:
        """Commit one batch and settle its callers' futures (never raises)."""
        # The same id twice in one batch: the first decides, the others are duplicates of it.
        firsts: dict[str, _Put] = {}
        for item in batch:
            firsts.setdefault(item.event.id, item)
        try:
            new_ids = await self._insert(list(firsts.values()))
        except Exception as exc:
            if len(firsts) > 1 and _row_specific(exc):
                # One bad event must not fail its neighbours: write each on its own.
                for item in batch:
                    await self._write([item])
                return
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        self.stats.commits += 1
        self.stats.events += len(batch)
        self.stats.new += len(new_ids)
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        for item in batch:
            if not item.future.done():
                is_new = item is firsts[item.event.id] and item.event.id in new_ids
                item.future.set_result(is_new)
        if new_ids:
            self._arrived.set()

    async def _insert(self, items: list[_Put]) -> set[str]:
        async with self._write_engine.begin() as conn:
            return await self._insert_events(conn, [item.event for item in items])

    async def _insert_events(self, conn: AsyncConnection, new: Sequence[NewEvent]) -> set[str]:
        """Insert events (those whose id is already there are left alone); the new ids."""
        insert = postgresql.insert if self._is_postgresql else sqlite.insert
        stmt = insert(events).on_conflict_do_nothing(index_elements=["id"]).returning(events.c.id)
        # Claimable from now: not from received_at, which a sender's or poller's clock set.
        now = _now()
        rows = [
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
        # One executemany; SQLAlchemy sends it as multi-row INSERTs and gathers RETURNING.
        result = await conn.execute(stmt, rows)
        return set(result.scalars().all())

    # -- dispatching -----------------------------------------------------------------------

    async def claim(
        self, worker: str, *, limit: int = 100, lease: float = 60.0
    ) -> list[StoredEvent]:
        """Take up to ``limit`` waiting events, oldest first, for ``lease`` seconds.

        Waiting means pending (and past any release delay), or claimed under a lease that has
        expired because its worker died or stalled. Each claimed event's ``attempts`` counts
        this claim. Concurrent claimers never get the same event.
        """
        async with self._write_engine.begin() as conn:
            return await self._claim(conn, worker, limit=limit, lease=lease)

    async def _claim(
        self, conn: AsyncConnection, worker: str, *, limit: int, lease: float
    ) -> list[StoredEvent]:
        if limit < 1:
            return []
        now = _now()
        await self._wake_parked(conn, now)
        # A pending event's available_at is when it may be taken; a claimed one's is the end of
        # its lease. So one condition covers both, and it walks the partial index of claimable
        # events in seq order, stopping after `limit` rows. The condition is literal text (no
        # bound parameters) so that SQLite and PostgreSQL match that index's WHERE clause.
        picked = (
            sa.select(events.c.seq)
            .where(sa.text(CLAIMABLE), events.c.available_at <= now)
            .order_by(events.c.seq)
            .limit(limit)
        )
        values = {
            "state": CLAIMED,
            "claimed_by": worker,
            "available_at": now + timedelta(seconds=lease),
            "attempts": events.c.attempts + 1,
        }
        if self._is_postgresql:
            # Rows another dispatcher is claiming right now are skipped, not waited for. The
            # materialised CTE runs the locking SELECT exactly once (a subquery the planner
            # re-scans could lock and take more than `limit` rows).
            cte = picked.with_for_update(skip_locked=True).cte("picked").prefix_with("MATERIALIZED")
            stmt = events.update().where(events.c.seq == cte.c.seq)
        else:
            # SQLite: the write transaction (BEGIN IMMEDIATE) already excludes other claimers.
            stmt = events.update().where(events.c.seq.in_(picked.scalar_subquery()))
        stmt = stmt.values(values).returning(*events.c)
        rows = (await conn.execute(stmt)).all()
        return sorted((_stored(row) for row in rows), key=lambda e: e.seq)

    async def _wake_parked(self, conn: AsyncConnection, now: datetime) -> None:
        """Parked events whose resume time has come become claimable (their own index finds
        them: a claim costs nothing more however many runs are parked)."""
        # The literal condition (not a bound parameter) lets SQLite use the partial index.
        await conn.execute(
            events.update()
            .where(sa.text(PARKED_ONLY), events.c.available_at <= now)
            .values(state=PENDING)
        )

    async def next_resume(self) -> datetime | None:
        """When the earliest parked event is due (None when nothing is parked)."""
        async with self._engine.connect() as conn:
            return (
                await conn.execute(
                    sa.select(sa.func.min(events.c.available_at)).where(sa.text(PARKED_ONLY))
                )
            ).scalar_one_or_none()

    async def claim_and_start(
        self,
        worker: str,
        zaps_of: Callable[[StoredEvent], list[str]],
        *,
        limit: int = 100,
        lease: float = 60.0,
        stale_after: float = 600.0,
        floods: dict[str, tuple[int, float]] | None = None,
        gates: dict[str, Gate] | None = None,
    ) -> tuple[list[StoredEvent], dict[tuple[str, str], str]]:
        """:meth:`claim` and :meth:`start_runs` for the claimed events' zaps (``zaps_of``), in
        one transaction: a dispatcher's event waits for one commit before its runs start, not
        two. ``floods``: zap → (max runs, per seconds); a new run beyond its zap's limit is
        entered ``held`` instead (flood protection), to be released or discarded by hand.
        ``gates``: zap → its concurrency and rate limit; a run beyond them is entered
        ``queued`` and starts, oldest first, when a slot frees up."""
        async with self._write_engine.begin() as conn:
            if gates:
                await self._wake_queued(conn, gates)
            claimed = await self._claim(conn, worker, limit=limit, lease=lease)
            pairs = [(event.id, zap) for event in claimed for zap in zaps_of(event)]
            if floods:
                await self._hold_floods(conn, pairs, floods)
            queued: set[tuple[str, str]] = set()
            if gates:
                queued = await self._gate(conn, pairs, gates)
                pairs = [p for p in pairs if p not in queued]
            started = await self._start_runs(conn, pairs, worker, stale_after, ())
        started.update(dict.fromkeys(queued, QUEUED))
        return claimed, started

    async def _room(self, conn: AsyncConnection, zap: str, gate: Gate, now: datetime) -> int:
        """How many more runs of ``zap`` may start now under its gate."""
        room = 1 << 30
        if gate.concurrency is not None:
            running = await conn.execute(
                sa.select(sa.func.count())
                .select_from(runs)
                .where(runs.c.zap == zap, runs.c.state == RUNNING)
            )
            room = gate.concurrency - int(running.scalar_one())
        if gate.rate is not None:
            recent = await conn.execute(
                sa.select(sa.func.count())
                .select_from(runs)
                .where(
                    runs.c.zap == zap,
                    runs.c.state.not_in([HELD, DISCARDED, QUEUED]),
                    runs.c.started_at > now - timedelta(seconds=gate.rate.per),
                )
            )
            room = min(room, gate.rate.count - int(recent.scalar_one()))
        return max(0, room)

    async def _wake_queued(self, conn: AsyncConnection, gates: dict[str, Gate]) -> None:
        """The events of the oldest queued runs of each gated zap that has a free slot become
        claimable now (the claim that follows, in seq order, takes them)."""
        now = _now()
        waiting = await conn.execute(
            sa.select(runs.c.zap)
            .where(sa.text(QUEUED_ONLY), runs.c.zap.in_(list(gates)))
            .group_by(runs.c.zap)
        )
        for zap in [row.zap for row in waiting.all()]:
            room = await self._room(conn, zap, gates[zap], now)
            if not room:
                continue
            oldest = (
                sa.select(runs.c.event_id)
                .where(sa.text(QUEUED_ONLY), runs.c.zap == zap)
                .order_by(runs.c.started_at, runs.c.event_id)
                .limit(min(room, CHUNK))
            )
            await conn.execute(
                events.update()
                .where(events.c.id.in_(oldest.scalar_subquery()), events.c.state == PARKED)
                .values(state=PENDING, available_at=now)
            )

    async def wake_ungated(self, gated: Iterable[str]) -> int:
        """Queued runs of zaps no longer gated (their limit was taken out of the zap file)
        start: their events become claimable now. Returns how many events."""
        now = _now()
        async with self._write_engine.begin() as conn:
            ids = (
                sa.select(runs.c.event_id)
                .where(sa.text(QUEUED_ONLY), runs.c.zap.not_in(list(gated)))
                .limit(CHUNK)
            )
            woken = await conn.execute(
                events.update()
                .where(events.c.id.in_(ids.scalar_subquery()), events.c.state == PARKED)
                .values(state=PENDING, available_at=now)
            )
        return woken.rowcount or 0

    async def _gate(
        self, conn: AsyncConnection, pairs: Sequence[tuple[str, str]], gates: dict[str, Gate]
    ) -> set[tuple[str, str]]:
        """Enter as ``queued`` the runs about to start beyond their zap's concurrency or rate
        limit (runs queued before go first); returns them."""
        now = _now()
        insert = postgresql.insert if self._is_postgresql else sqlite.insert
        kept: set[tuple[str, str]] = set()
        for zap in sorted(gates):  # in one order: two PostgreSQL dispatchers never deadlock
            mine = [p for p in dict.fromkeys(pairs) if p[1] == zap][: CHUNK // 2]
            if not mine:
                continue
            if self._is_postgresql:  # one dispatcher counts and starts this zap's runs at once
                await conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"),
                    {"key": zlib.crc32(f"zapflow.gate:{zap}".encode())},
                )
            rows = await conn.execute(
                sa.select(runs.c.event_id, runs.c.state, runs.c.resume_at, runs.c.started_at).where(
                    runs.c.zap == zap, runs.c.event_id.in_([e for e, _ in mine])
                )
            )
            known = {row.event_id: row for row in rows.all()}

            candidates = [p for p in mine if _startable(known.get(p[0]), now)]
            # Runs queued (or started) before come first, then new ones in claim order.
            candidates.sort(
                key=lambda p: (p[0] not in known, known[p[0]].started_at if p[0] in known else now)
            )
            gate = gates[zap]
            over = candidates[await self._room(conn, zap, gate, now) :]
            if not over:
                continue
            why = gate.describe()
            stmt = insert(runs).values(
                [
                    {"event_id": e, "zap": z, "state": QUEUED, "started_at": now, "message": why}
                    for e, z in over
                ]
            )
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["event_id", "zap"],
                    set_={"state": QUEUED, "message": why, "worker": None},
                )
            )
            kept.update(over)
        return kept

    async def _hold_floods(
        self,
        conn: AsyncConnection,
        pairs: Sequence[tuple[str, str]],
        floods: dict[str, tuple[int, float]],
    ) -> None:
        """Enter as ``held`` the new runs of a zap beyond its flood limit: more runs started
        in the last ``per`` seconds than ``max`` (held and discarded ones do not count)."""
        now = _now()
        insert = postgresql.insert if self._is_postgresql else sqlite.insert
        for zap, (most, per) in floods.items():
            mine = [p for p in dict.fromkeys(pairs) if p[1] == zap]
            if not mine:
                continue
            known = await conn.execute(
                sa.select(runs.c.event_id).where(
                    runs.c.zap == zap, runs.c.event_id.in_([e for e, _ in mine][:CHUNK])
                )
            )
            seen = {row.event_id for row in known.all()}
            fresh = [p for p in mine if p[0] not in seen]
            if not fresh:
                continue
            recent = await conn.execute(
                sa.select(sa.func.count())
                .select_from(runs)
                .where(
                    runs.c.zap == zap,
                    runs.c.started_at >= now - timedelta(seconds=per),
                    runs.c.state.not_in([HELD, DISCARDED]),
                )
            )
            room = max(0, most - int(recent.scalar_one()))
            over = fresh[room:]
            if over:
                await conn.execute(
                    insert(runs)
                    .values(
                        [
                            {
                                "event_id": e,
                                "zap": z,
                                "state": HELD,
                                "started_at": now,
                                "message": f"held: more than {most} runs in {per:g} s",
                            }
                            for e, z in over
                        ]
                    )
                    .on_conflict_do_nothing(index_elements=["event_id", "zap"])
                )

    async def held_runs(self, zap: str | None = None, limit: int = 1000) -> list[LedgerRun]:
        """Runs held by flood protection, oldest first."""
        found = await self.recent_runs(limit=100_000, zap=zap, state=HELD)
        return list(reversed(found))[:limit]

    async def let_go(
        self, action: str, *, zap: str | None = None, event_ids: Sequence[str] = ()
    ) -> int:
        """Release (``release``: they run) or discard (``discard``: they never run) held runs
        of ``zap`` and/or ``event_ids`` (all held runs when neither is given). Returns how
        many."""
        now = _now()
        where = [runs.c.state == HELD]
        if zap is not None:
            where.append(runs.c.zap == zap)
        if event_ids:
            where.append(runs.c.event_id.in_(list(event_ids)[:CHUNK]))
        async with self._write_engine.begin() as conn:
            picked = await conn.execute(
                runs.update()
                .where(*where)
                .values(
                    state=ABANDONED if action == "release" else DISCARDED,
                    finished_at=now,
                    message=f"{action}d by zapflow {action}",
                )
                .returning(runs.c.event_id)
            )
            ids = sorted({row.event_id for row in picked.all()})
            for start in range(0, len(ids), CHUNK):
                await conn.execute(  # claimable now: released runs start, discarded ones end
                    events.update()
                    .where(events.c.id.in_(ids[start : start + CHUNK]), events.c.state == PARKED)
                    .values(state=PENDING, available_at=now)
                )
        return len(ids)

    async def extend(self, worker: str, seqs: list[int], lease: float) -> None:
        """Renew ``worker``'s lease on these events for ``lease`` more seconds from now.

        Events no longer claimed by ``worker`` (its lease expired and another took them) are
        left alone.
        """
        until = _now() + timedelta(seconds=lease)
        async with self._write_engine.begin() as conn:
            for chunk in _chunks(seqs):
                await conn.execute(
                    events.update()
                    .where(
                        events.c.seq.in_(chunk),
                        events.c.state == CLAIMED,
                        events.c.claimed_by == worker,
                    )
                    .values(available_at=until)
                )

    # -- step checkpoints ------------------------------------------------------------------

    async def save_steps(self, rows: Sequence[StepOutcome]) -> None:
        """Commit steps' outcomes (one transaction): a resumed run skips these steps."""
        if not rows:
            return
        async with self._write_engine.begin() as conn:
            await self._save_steps(conn, rows)

    async def _save_steps(self, conn: AsyncConnection, rows: Sequence[StepOutcome]) -> None:
        insert = postgresql.insert if self._is_postgresql else sqlite.insert
        now = _now()
        stmt = insert(steps)
        stmt = stmt.on_conflict_do_update(
            index_elements=["event_id", "zap", "step"],
            set_={"status": stmt.excluded.status, "output": stmt.excluded.output},
        )
        await conn.execute(
            stmt,
            [
                {
                    "event_id": r.event_id,
                    "zap": r.zap,
                    "step": r.step,
                    "status": r.status,
                    "output": r.output,
                    "finished_at": now,
                }
                for r in rows
            ],
        )

    async def load_steps(
        self, pairs: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], dict[str, tuple[str, Any]]]:
        """The steps already done of these (event, zap) runs: step id → (status, output)."""
        found: dict[tuple[str, str], dict[str, tuple[str, Any]]] = {}
        wanted = list(dict.fromkeys(pairs))
        async with self._engine.connect() as conn:
            for start in range(0, len(wanted), CHUNK // 2):
                chunk = wanted[start : start + CHUNK // 2]
                rows = await conn.execute(
                    sa.select(steps).where(sa.tuple_(steps.c.event_id, steps.c.zap).in_(chunk))
                )
                for row in rows.all():
                    found.setdefault((row.event_id, row.zap), {})[row.step] = (
                        row.status,
                        row.output,
                    )
        return found

    # -- dispatchers' heartbeats ------------------------------------------------------------

    async def heartbeat(
        self, worker: str, host: str, seqs: Sequence[int] = (), lease: float = 120.0
    ) -> None:
        """``worker`` is alive: note it, and extend its leases on the events in ``seqs`` (those
        it is still running), so nobody takes them while it works on them."""
        now = _now()
        insert = postgresql.insert if self._is_postgresql else sqlite.insert
        async with self._write_engine.begin() as conn:
            await conn.execute(
                insert(workers)
                .values(worker=worker, host=host, started_at=now, seen_at=now)
                .on_conflict_do_update(index_elements=["worker"], set_={"seen_at": now})
            )
            until = now + timedelta(seconds=lease)
            for chunk in _chunks(list(seqs)):
                await conn.execute(
                    events.update()
                    .where(
                        events.c.seq.in_(chunk),
                        events.c.state == CLAIMED,
                        events.c.claimed_by == worker,
                    )
                    .values(available_at=until)
                )

    async def sign_off(self, worker: str) -> None:
        """``worker`` stops (gracefully): it holds nothing any more."""
        async with self._write_engine.begin() as conn:
            await conn.execute(workers.delete().where(workers.c.worker == worker))

    async def silent_workers(self, candidates: Iterable[str], silent_for: float) -> set[str]:
        """Those of ``candidates`` whose heartbeat stopped more than ``silent_for`` seconds
        ago (a worker with no heartbeat row at all is not judged here)."""
        wanted = list(candidates)
        if not wanted:
            return set()
        since = _now() - timedelta(seconds=silent_for)
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                sa.select(workers.c.worker).where(
                    workers.c.worker.in_(wanted[:CHUNK]), workers.c.seen_at < since
                )
            )
            return {str(w) for (w,) in rows.all()}

    async def claiming_workers(self) -> set[str]:
        """The workers holding claimed events (leases expired or not)."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                sa.select(events.c.claimed_by)
                .where(events.c.state == CLAIMED, events.c.claimed_by.is_not(None))
                .distinct()
            )
            return {str(w) for (w,) in rows.all() if w}

    async def release_worker(self, worker: str) -> int:
        """Give back every event ``worker`` holds, at once: for a worker known to be dead
        (rather than waiting for its leases to expire). Returns how many."""
        async with self._write_engine.begin() as conn:
            result = await conn.execute(
                events.update()
                .where(events.c.state == CLAIMED, events.c.claimed_by == worker)
                .values(state=PENDING, available_at=_now(), claimed_by=None)
            )
            return int(result.rowcount or 0)

    async def done(self, seqs: list[int]) -> None:
        """Mark events processed: every matching zap ran (or was found to have run)."""
        await self.finish_runs((), seqs)

    async def release(self, seqs: list[int], *, delay: float = 0.0) -> None:
        """Give claimed events back, to be claimed again no sooner than ``delay`` seconds.

        For when they cannot be processed now (e.g. Prefect's server is down): they wait in
        the inbox and drain when it returns.
        """
        available = _now() + timedelta(seconds=delay)
        async with self._write_engine.begin() as conn:
            for chunk in _chunks(seqs):
                await conn.execute(
                    events.update()
                    .where(events.c.seq.in_(chunk), events.c.state == CLAIMED)
                    .values(state=PENDING, available_at=available, claimed_by=None)
                )

    async def hurry(self) -> int:
        """Make every waiting event claimable now (those given back with a delay while Prefect
        was down, which would otherwise trickle back one delay at a time). Returns how many."""
        now = _now()
        async with self._write_engine.begin() as conn:
            result = await conn.execute(
                events.update()
                .where(events.c.state == PENDING, events.c.available_at > now)
                .values(available_at=now)
            )
            return int(result.rowcount or 0)

    async def get(self, event_id: str) -> StoredEvent | None:
        """The stored event with this id (in any state), e.g. to replay it."""
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(events).where(events.c.id == event_id))).first()
        return _stored(row) if row is not None else None

    # -- the (event, zap) run ledger -------------------------------------------------------

    async def start_run(self, event_id: str, zap: str, *, stale_after: float = 600.0) -> bool:
        """Record that ``zap`` starts on the event; False if it must not (it ran or runs).

        False when the pair already ran (:meth:`finish_run` recorded how it ended: completed,
        filtered, failed …), or when another dispatcher started it less than ``stale_after``
        seconds ago. A run "running" for longer than that is taken to have died with its
        process and is taken over; so is a run given back with :meth:`abandon_run`.
        """
        started = await self.start_runs([(event_id, zap)], stale_after=stale_after)
        return started.get((event_id, zap)) == "started"

    async def finish_run(
        self,
        event_id: str,
        zap: str,
        state: str,
        flow_run_id: str | None = None,
        *,
        failing_step: str | None = None,
        message: str | None = None,
    ) -> None:
        """Record how the zap run ended (``completed``, ``filtered``, ``failed`` …).

        Whatever the state, the zap has run on the event and :meth:`start_run` will refuse it
        from now on; use :meth:`abandon_run` for a run that did not happen.
        """
        await self.finish_runs(
            [RunResult(event_id, zap, state, flow_run_id, failing_step, message)]
        )

    async def abandon_run(self, event_id: str, zap: str) -> None:
        """Give back a started run that did not happen (e.g. Prefect's server was unreachable).

        The pair may then be started again at once, by this dispatcher or another.
        """
        await self.abandon_runs([(event_id, zap)])

    async def start_runs(
        self,
        pairs: Sequence[tuple[str, str]],
        *,
        worker: str | None = None,
        stale_after: float = 600.0,
        dead_workers: Sequence[str] = (),
    ) -> dict[tuple[str, str], str]:
        """:meth:`start_run` for many ``(event_id, zap)`` pairs in one transaction.

        Returns each pair's state: ``"started"`` for the pairs this call started, else the
        ledger's state (``running`` elsewhere, or how the run ended). Runs left ``running`` by
        one of ``dead_workers`` (known to have died) are taken over at once, not only once
        they are ``stale_after`` seconds old.
        """
        if not pairs:
            return {}
        async with self._write_engine.begin() as conn:
            return await self._start_runs(conn, pairs, worker, stale_after, dead_workers)

    async def _start_runs(
        self,
        conn: AsyncConnection,
        pairs: Sequence[tuple[str, str]],
        worker: str | None,
        stale_after: float,
        dead_workers: Sequence[str],
    ) -> dict[tuple[str, str], str]:
        wanted = list(dict.fromkeys(pairs))
        now = _now()
        insert = postgresql.insert if self._is_postgresql else sqlite.insert
        found: dict[tuple[str, str], str] = {}
        if not wanted:
            return found
        for start in range(0, len(wanted), CHUNK // 2):
            chunk = wanted[start : start + CHUNK // 2]
            fresh = (
                insert(runs)
                .values(
                    [
                        {
                            "event_id": e,
                            "zap": z,
                            "state": RUNNING,
                            "started_at": now,
                            "worker": worker,
                        }
                        for e, z in chunk
                    ]
                )
                .on_conflict_do_nothing(index_elements=["event_id", "zap"])
                .returning(runs.c.event_id, runs.c.zap)
            )
            for row in (await conn.execute(fresh)).all():
                found[(row.event_id, row.zap)] = "started"
            rest = [p for p in chunk if p not in found]
            if not rest:
                continue
            pair = sa.tuple_(runs.c.event_id, runs.c.zap)
            takeover = (
                runs.update()
                .where(
                    pair.in_(rest),
                    sa.or_(
                        runs.c.state == ABANDONED,
                        runs.c.state == QUEUED,
                        sa.and_(runs.c.state == WAITING, runs.c.resume_at <= now),
                        sa.and_(
                            runs.c.state == RUNNING,
                            sa.or_(
                                runs.c.started_at <= now - timedelta(seconds=stale_after),
                                runs.c.worker.in_(list(dead_workers)),
                            ),
                        ),
                    ),
                )
                .values(
                    state=RUNNING,
                    worker=worker,
                    started_at=now,
                    finished_at=None,
                    flow_run_id=None,
                    failing_step=None,
                    message=None,
                )
                .returning(runs.c.event_id, runs.c.zap)
            )
            # On PostgreSQL two takers meet on the row lock; the second then re-reads the
            # row, finds it freshly started and updates nothing.
            for row in (await conn.execute(takeover)).all():
                found[(row.event_id, row.zap)] = "started"
            rest = [p for p in chunk if p not in found]
            if rest:
                existing = sa.select(runs.c.event_id, runs.c.zap, runs.c.state).where(
                    pair.in_(rest)
                )
                for row in (await conn.execute(existing)).all():
                    found[(row.event_id, row.zap)] = row.state
        return found

    async def autoreplays(self, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """How many times each of these runs has been autoreplayed (pairs never replayed: 0)."""
        if not pairs:
            return {}
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                sa.select(runs.c.event_id, runs.c.zap, runs.c.autoreplays).where(
                    sa.tuple_(runs.c.event_id, runs.c.zap).in_(list(pairs)[: CHUNK // 2])
                )
            )
            return {(row.event_id, row.zap): int(row.autoreplays or 0) for row in rows.all()}

    async def running_workers(self, pairs: Sequence[tuple[str, str]]) -> set[str]:
        """The workers the ledger says are running these pairs."""
        if not pairs:
            return set()
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                sa.select(runs.c.worker)
                .where(
                    sa.tuple_(runs.c.event_id, runs.c.zap).in_(list(pairs)[: CHUNK // 2]),
                    runs.c.state == RUNNING,
                    runs.c.worker.is_not(None),
                )
                .distinct()
            )
            return {str(w) for (w,) in rows.all() if w}

    async def finish_runs(
        self,
        results: Sequence[RunResult],
        done: Sequence[int] = (),
        parked: Sequence[int] = (),
        new_events: Sequence[NewEvent] = (),
    ) -> None:
        """Record how many zap runs ended (or parked: ``waiting`` with a resume time), mark
        events done, park events (``parked``: each is claimed again when the earliest of its
        waiting runs is due) and put the events those ends made (``new_events``: a failed
        run's ``builtin.zap_failed``), in one transaction."""
        if not results and not done and not parked and not new_events:
            return
        now = _now()
        checkpoints = [step for r in results for step in r.steps]
        async with self._write_engine.begin() as conn:
            if checkpoints:
                await self._save_steps(conn, checkpoints)
            if results:
                await conn.execute(
                    runs.update()
                    .where(
                        runs.c.event_id == sa.bindparam("b_event"),
                        runs.c.zap == sa.bindparam("b_zap"),
                    )
                    .values(
                        state=sa.bindparam("b_state"),
                        flow_run_id=sa.bindparam("b_flow_run"),
                        failing_step=sa.bindparam("b_step"),
                        message=sa.bindparam("b_message"),
                        # A run that waited keeps when it resumed (for `zapflow runs`).
                        resume_at=sa.func.coalesce(
                            sa.bindparam("b_resume", type_=UTCDateTime()), runs.c.resume_at
                        ),
                        zap_version=sa.func.coalesce(
                            sa.bindparam("b_version", type_=sa.Text()), runs.c.zap_version
                        ),
                        autoreplays=sa.func.coalesce(
                            sa.bindparam("b_autoreplays", type_=sa.Integer()), runs.c.autoreplays
                        ),
                        finished_at=now,
                    ),
                    [
                        {
                            "b_event": r.event_id,
                            "b_zap": r.zap,
                            "b_state": r.state,
                            "b_flow_run": r.flow_run_id,
                            "b_step": r.failing_step,
                            "b_message": r.message,
                            "b_resume": r.resume_at,
                            "b_version": r.zap_version,
                            "b_autoreplays": r.autoreplays,
                        }
                        for r in results
                    ],
                )
            for chunk in _chunks(list(done)):
                await conn.execute(
                    events.update()
                    .where(events.c.seq.in_(chunk))
                    .values(state=DONE, done_at=now, claimed_by=None)
                )
            await self._park(conn, parked, now)
            if new_events:
                await self._insert_events(conn, new_events)

    async def _park(self, conn: AsyncConnection, seqs: Sequence[int], now: datetime) -> None:
        """Park events until the earliest resume time of their waiting runs; with none, until
        released (runs held by flood protection) or woken (runs queued for a slot); else now
        (the next claim finds that every run is over)."""
        earliest = (
            sa.select(sa.func.min(runs.c.resume_at))
            .where(runs.c.event_id == events.c.id, runs.c.state == WAITING)
            .scalar_subquery()
        )
        held = (
            sa.select(sa.literal(FAR, UTCDateTime()))
            .where(runs.c.event_id == events.c.id, runs.c.state.in_([HELD, QUEUED]))
            .limit(1)
            .scalar_subquery()
        )
        for chunk in _chunks(list(seqs)):
            await conn.execute(
                events.update()
                .where(events.c.seq.in_(chunk))
                .values(
                    state=PARKED,
                    claimed_by=None,
                    available_at=sa.func.coalesce(earliest, held, sa.literal(now, UTCDateTime())),
                )
            )

    async def record_run(self, event: NewEvent, result: RunResult) -> None:
        """Record a zap run made outside the dispatcher (``zapflow run``, ``replay``, the demo):
        its event, already done, and its ledger row, finished (with its steps' checkpoints)."""
        now = _now()
        insert = postgresql.insert if self._is_postgresql else sqlite.insert
        async with self._write_engine.begin() as conn:
            if result.steps:
                await self._save_steps(conn, list(result.steps))
            await conn.execute(
                insert(events)
                .values(
                    id=event.id,
                    app=event.app,
                    trigger=event.trigger,
                    connection=event.connection,
                    zap=event.zap,
                    payload=event.payload,
                    received_at=event.received_at,
                    state=DONE,
                    available_at=now,
                    attempts=1,
                    done_at=now,
                )
                .on_conflict_do_nothing(index_elements=["id"])
            )
            await conn.execute(
                insert(runs)
                .values(event_id=result.event_id, zap=result.zap, **_ended(result, now))
                .on_conflict_do_nothing(index_elements=["event_id", "zap"])
            )

    async def rerecord_run(self, result: RunResult) -> None:
        """Record a run made again on its own event and ledger row (``zapflow replay`` from the
        failed step): the row says how it ended this time."""
        now = _now()
        async with self._write_engine.begin() as conn:
            if result.steps:
                await self._save_steps(conn, list(result.steps))
            await conn.execute(
                runs.update()
                .where(runs.c.event_id == result.event_id, runs.c.zap == result.zap)
                .values(**_ended(result, now))
            )

    async def save_zap_version(
        self, version: str, zap: str, definition: dict[str, Any], git_revision: str | None
    ) -> None:
        """Keep a zap version's definition (once: a version is its content)."""
        insert = postgresql.insert if self._is_postgresql else sqlite.insert
        async with self._write_engine.begin() as conn:
            await conn.execute(
                insert(zap_versions)
                .values(
                    version=version,
                    zap=zap,
                    definition=definition,
                    git_revision=git_revision,
                    first_seen=_now(),
                )
                .on_conflict_do_nothing(index_elements=["version"])
            )

    async def zap_version(self, version: str) -> tuple[dict[str, Any], str | None] | None:
        """A recorded zap version's definition and git revision."""
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(zap_versions.c.definition, zap_versions.c.git_revision).where(
                        zap_versions.c.version == version
                    )
                )
            ).first()
        return (row.definition, row.git_revision) if row is not None else None

    async def abandon_runs(
        self, pairs: Sequence[tuple[str, str]], reason: str | None = None
    ) -> None:
        """:meth:`abandon_run` for many pairs in one transaction; ``reason`` says why the run
        did not happen (``zapflow runs`` shows it while the event waits)."""
        if not pairs:
            return
        async with self._write_engine.begin() as conn:
            for start in range(0, len(pairs), CHUNK // 2):
                chunk = list(pairs[start : start + CHUNK // 2])
                await conn.execute(
                    runs.update()
                    .where(
                        sa.tuple_(runs.c.event_id, runs.c.zap).in_(chunk),
                        runs.c.state == RUNNING,
                    )
                    .values(state=ABANDONED, finished_at=_now(), message=reason)
                )

    async def recent_runs(
        self,
        *,
        limit: int = 20,
        zap: str | None = None,
        event_prefix: str | None = None,
        waiting: bool = False,
        state: str | None = None,
    ) -> list[LedgerRun]:
        """The ledger's zap runs, most recently started first, with their events' trigger;
        ``waiting``: only the runs parked in a delay, the soonest due first."""
        stmt = (
            sa.select(runs, events.c.app, events.c.trigger)
            .join(events, events.c.id == runs.c.event_id, isouter=True)
            .limit(limit)
        )
        if waiting:
            stmt = stmt.where(runs.c.state == WAITING).order_by(
                runs.c.resume_at, runs.c.event_id, runs.c.zap
            )
        else:
            stmt = stmt.order_by(runs.c.started_at.desc(), runs.c.event_id)
        if state is not None:
            stmt = stmt.where(runs.c.state == state)
        if zap is not None:
            stmt = stmt.where(runs.c.zap == zap)
        if event_prefix:
            escaped = event_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            stmt = stmt.where(runs.c.event_id.like(escaped + "%", escape="\\"))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [
            LedgerRun(
                event_id=row.event_id,
                zap=row.zap,
                state=row.state,
                flow_run_id=row.flow_run_id,
                started_at=row.started_at,
                finished_at=row.finished_at,
                failing_step=row.failing_step,
                message=row.message,
                app=row.app,
                trigger=row.trigger,
                resume_at=row.resume_at,
                zap_version=row.zap_version,
                autoreplays=row.autoreplays,
            )
            for row in rows
        ]

    async def resume_waiting(self, event_id: str, zap: str) -> datetime | None:
        """Make a run parked in a delay due now (``zapflow resume``): its delay step ends at
        once and the next claim runs it on. Returns the resume time it had, None if the run
        was not waiting."""
        now = _now()
        async with self._write_engine.begin() as conn:
            mine = (runs.c.event_id == event_id, runs.c.zap == zap, runs.c.state == WAITING)
            look = sa.select(runs.c.resume_at).where(*mine)
            if self._is_postgresql:
                look = look.with_for_update()
            was = (await conn.execute(look)).scalar_one_or_none()
            if was is None:
                return None
            await conn.execute(runs.update().where(*mine).values(resume_at=now))
            waiting = await conn.execute(
                sa.select(steps.c.step, steps.c.output).where(
                    steps.c.event_id == event_id, steps.c.zap == zap, steps.c.status == WAITING
                )
            )
            for step, output in waiting.all():
                await conn.execute(
                    steps.update()
                    .where(steps.c.event_id == event_id, steps.c.zap == zap, steps.c.step == step)
                    .values(output={**(output or {}), "resume_at": now.isoformat()})
                )
            await conn.execute(
                events.update()
                .where(events.c.id == event_id, events.c.state == PARKED)
                .values(state=PENDING, available_at=now)
            )
        return was

    async def cancel_waiting(self, event_id: str, zap: str, reason: str) -> dict[str, Any] | None:
        """End a run parked in a delay for good (``zapflow cancel``): it is ``cancelled`` and
        never resumes. Returns the waiting step's checkpoint (to close its task run), None if
        the run was not waiting."""
        now = _now()
        async with self._write_engine.begin() as conn:
            changed = await conn.execute(
                runs.update()
                .where(runs.c.event_id == event_id, runs.c.zap == zap, runs.c.state == WAITING)
                .values(state="cancelled", finished_at=now, resume_at=None, message=reason)
            )
            if not changed.rowcount:
                return None
            output = (
                await conn.execute(
                    sa.select(steps.c.output).where(
                        steps.c.event_id == event_id, steps.c.zap == zap, steps.c.status == WAITING
                    )
                )
            ).scalar()
            # The event is parked until its earliest waiting run: now, if none is left.
            seq = (
                await conn.execute(
                    sa.select(events.c.seq).where(events.c.id == event_id, events.c.state == PARKED)
                )
            ).scalar_one_or_none()
            if seq is not None:
                await self._park(conn, [seq], now)
        return output if isinstance(output, dict) else {}

    async def run_state(self, event_id: str, zap: str) -> str | None:
        """The ledger's state for the pair (``running``, ``completed`` …), None if never run.

        Tells a dispatcher whose ``start_run`` was refused whether the run is finished (the
        event can be marked done) or still running elsewhere (release it and look again later).
        """
        async with self._engine.connect() as conn:
            return (
                await conn.execute(
                    sa.select(runs.c.state).where(runs.c.event_id == event_id, runs.c.zap == zap)
                )
            ).scalar_one_or_none()

    # -- retention, tokens, health ---------------------------------------------------------

    async def purge(self, older_than: timedelta) -> int:
        """Delete events done more than ``older_than`` ago, with their ledger rows (and the
        heartbeats of dispatchers silent as long).

        Returns how many events were deleted. Works in chunks, so a large purge never holds
        SQLite's write lock for long. A purged event's id is forgotten: keep processed events
        longer than any sender might redeliver one, or the redelivery runs again.
        """
        cutoff = _now() - older_than
        total = 0
        while True:
            async with self._write_engine.begin() as conn:
                rows = (
                    await conn.execute(
                        sa.select(events.c.seq, events.c.id)
                        .where(events.c.state == DONE, events.c.done_at < cutoff)
                        .limit(CHUNK)
                    )
                ).all()
                if rows:
                    ids = [r.id for r in rows]
                    await conn.execute(steps.delete().where(steps.c.event_id.in_(ids)))
                    await conn.execute(runs.delete().where(runs.c.event_id.in_(ids)))
                    await conn.execute(
                        events.delete().where(events.c.seq.in_([r.seq for r in rows]))
                    )
            total += len(rows)
            if len(rows) < CHUNK:
                break
        async with self._write_engine.begin() as conn:  # dispatchers long gone
            await conn.execute(workers.delete().where(workers.c.seen_at < cutoff))
        return total

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

    async def counts(self) -> dict[str, int]:
        """How many events are pending, claimed and done."""
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(events.c.state, sa.func.count().label("n")).group_by(events.c.state)
                )
            ).all()
        found = {row.state: row.n for row in rows}
        return {state: found.get(state, 0) for state in (PENDING, CLAIMED, PARKED, DONE)}
