"""The run ledger: one row per (event, zap) run — started, running, waiting, queued, held,
ended — with step checkpoints and zap versions; what `zapflow runs`, replays and
takeovers read."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from flows.events import Event
from flows.intake.db import (
    ABANDONED,
    CHUNK,
    DONE,
    FAR,
    HELD,
    PARKED,
    PENDING,
    QUEUED,
    RUNNING,
    WAITING,
    InboxBase,
    LedgerRun,
    RunResult,
    StepOutcome,
    UTCDateTime,
    _chunks,
    _ended,
    _now,
    events,
    runs,
    steps,
    zap_versions,
)


class RunLedger(InboxBase):
    """The (event, zap) run ledger and step checkpoints of the inbox."""

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
        new_events: Sequence[Event] = (),
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

    async def record_run(self, event: Event, result: RunResult) -> None:
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
