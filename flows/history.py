"""Zap runs as the run ledger records them: listing them, and running one again.

Every zap run — by ``zapflow serve``'s dispatcher, ``zapflow run``, ``replay`` or the demo — is
one row of the inbox's run ledger, keyed by (event, zap): its state, failing step, message and
the Prefect flow run that recorded its steps (a live flow run carries many events: each step's
task run there is named ``<step> ← <app.trigger> <first 12 of the event id>``). The event
itself stays in the inbox until retention purges it, so a run can be replayed from it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prefect.client.schemas.objects import State

from connectors._errors import ZapError
from flows.compiler import RUN_JOURNAL, ZapRunFailed, run_with_history
from flows.events import Event
from flows.intake.db import LedgerRun, RunResult, StepOutcome
from flows.intake.inbox import Inbox
from flows.loader import load_all
from flows.model import Zap, with_failure_zaps, zap_version
from flows.runtime import Journal


@dataclass
class RunRow:
    event_id: str
    zap: str
    event: str
    state: str
    started: datetime | None
    duration: timedelta | None
    failing_step: str | None
    message: str
    flow_run_id: str | None


def _row(run: LedgerRun) -> RunRow:
    label = f"{run.app}.{run.trigger} " if run.app else ""
    return RunRow(
        event_id=run.event_id,
        zap=run.zap,
        event=f"{label}{run.event_id[:12]}",
        state=_state(run),
        started=run.started_at,
        duration=(run.finished_at - run.started_at) if run.finished_at else None,
        failing_step=run.failing_step,
        message=run.message or "",
        flow_run_id=run.flow_run_id,
    )


def _state(run: LedgerRun) -> str:
    if run.state == "abandoned":  # it did not run (Prefect away …): the event waits to run
        return "Queued"
    if run.state == "held":
        return "Held (flood)"
    if run.state == "queued":  # waits for a slot of the zap's concurrency or rate_limit
        return "Queued (limit)"
    if run.state == "waiting" and run.resume_at is not None:
        return f"Waiting until {run.resume_at.astimezone(UTC):%m-%d %H:%M:%S}"
    return run.state.capitalize()


async def recent_runs(
    limit: int = 20,
    zap: str | None = None,
    *,
    inbox_url: str | None = None,
    waiting: bool = False,
) -> list[RunRow]:
    """The most recent zap runs, newest first (one per event and zap); ``waiting``: the runs
    parked in a delay, soonest due first."""
    inbox = await Inbox.open(inbox_url)
    try:
        return [_row(r) for r in await inbox.recent_runs(limit=limit, zap=zap, waiting=waiting)]
    finally:
        await inbox.close()


async def result_of(
    zap: Zap, event: Event, state: State, started: datetime, steps: list[StepOutcome] | None = None
) -> RunResult:
    """How a run made by ``run_with_history`` ended, as a ledger row."""
    status = "filtered" if state.name == "Filtered" else "completed"
    failing_step, message = None, state.message
    if state.is_failed() or state.is_crashed():
        status = "failed"
        error = await state.aresult(raise_on_failure=False)
        if isinstance(error, ZapRunFailed):
            failing_step = next((s.id for s in error.outcome.steps if s.status == "failed"), None)
            message = error.outcome.message
    return RunResult(
        event_id=event.id,
        zap=zap.zap,
        state=status,
        flow_run_id=str(state.state_details.flow_run_id or "") or None,
        failing_step=failing_step,
        message=message or None,
        started_at=started,
        zap_version=zap_version(zap),
        steps=steps or (),
    )


async def run_and_record(
    zap: Zap, event: Event, *, inbox: Inbox | None = None, connection: str | None = None
) -> State:
    """Run a zap once with full history (``run_with_history``) and enter it in the ledger,
    with its steps' checkpoints (so a failed run can be replayed from its failed step)."""
    started = datetime.now(UTC)
    state, saved = await _run_noting_steps(zap, event, {})
    own = inbox is None
    ledger = inbox or await Inbox.open()
    try:
        await ledger.record_run(
            replace(event, connection=connection or zap.trigger.connection, zap=zap.zap),
            await result_of(zap, event, state, started, saved),
        )
    finally:
        if own:
            await ledger.close()
    return state


def current_definition(zap_id: str, zap_dirs: list[Path]) -> Zap | None:
    loaded, _ = load_all([d for d in zap_dirs if d.exists()])
    return next((z for z in with_failure_zaps(i.zap for i in loaded) if z.zap == zap_id), None)


async def find_run(
    inbox: Inbox, ref: str, zap: str | None = None, *, waiting: bool = False
) -> LedgerRun:
    """A ledger run by its event id (or the id's first characters), and zap if several;
    ``waiting``: among the runs parked in a delay."""
    found = await inbox.recent_runs(limit=50, zap=zap, event_prefix=ref, waiting=waiting)
    if not found:
        where = "waiting run" if waiting else "zap run"
        see = "zapflow runs --waiting" if waiting else "zapflow runs"
        raise ZapError(f"no {where} whose event id starts with {ref!r} (see `{see}`)")
    pairs = {(r.event_id, r.zap) for r in found}
    if len(pairs) > 1:
        listed = ", ".join(sorted(f"{e[:12]} ({z})" for e, z in pairs)[:5])
        hint = "give more characters of the event id" + ("" if zap else " or --zap")
        raise ZapError(f"{ref!r} matches {len(pairs)} runs: {listed}; {hint}")
    return found[0]


@dataclass
class Replayed:
    """One replayed run: the run it replayed, the zap and event it ran, how it ended."""

    old: LedgerRun
    zap: Zap
    event: Event
    state: State
    how: str
    """``from step 'x'`` (the same event and ledger row, earlier steps from checkpoints) or
    ``from the start`` (a new event id)."""


async def replay(
    ref: str,
    zap_dirs: list[Path],
    *,
    zap: str | None = None,
    inbox_url: str | None = None,
    from_start: bool = False,
    version: str = "current",
) -> Replayed:
    """Run a recorded zap run again on its stored event.

    By default from its failed step: the same event and ledger row, the steps before it read
    from their checkpoints (not run again), the failed step and those after it run again — with
    the same idempotency keys, so an app that took the failed step's request after all does
    not act twice. ``from_start``: every step, as a new run with a new event id (so apps do not
    take it for a retry of the first and drop it). ``version``: ``current`` (the zap's file
    now, so a fixed zap can be replayed) or ``recorded`` (the version the run ran).
    """
    inbox = await Inbox.open(inbox_url)
    try:
        old = await find_run(inbox, ref, zap)
        return await _replay(inbox, old, zap_dirs, from_start=from_start, version=version)
    finally:
        await inbox.close()


async def replay_failed(
    zap_id: str,
    zap_dirs: list[Path],
    *,
    since: timedelta | None = None,
    inbox_url: str | None = None,
    from_start: bool = False,
    version: str = "current",
) -> list[Replayed | tuple[LedgerRun, ZapError]]:
    """Replay every failed run of a zap (started within ``since``), oldest first."""
    inbox = await Inbox.open(inbox_url)
    try:
        cutoff = datetime.now(UTC) - since if since is not None else None
        found = [
            run
            for run in await inbox.recent_runs(limit=10_000, zap=zap_id)
            if run.state == "failed" and (cutoff is None or run.started_at >= cutoff)
        ]
        done: list[Replayed | tuple[LedgerRun, ZapError]] = []
        for run in reversed(found):
            try:
                done.append(
                    await _replay(inbox, run, zap_dirs, from_start=from_start, version=version)
                )
            except ZapError as exc:
                done.append((run, exc))
        return done
    finally:
        await inbox.close()


async def _replay(
    inbox: Inbox, old: LedgerRun, zap_dirs: list[Path], *, from_start: bool, version: str
) -> Replayed:
    stored = await inbox.get(old.event_id)
    if stored is None:
        raise ZapError(
            f"event {old.event_id} was purged from the inbox (retention), so its run "
            "cannot be replayed"
        )
    model = await _zap_for(inbox, old, zap_dirs, version)
    # From the start: a new event id; from the failed step: its own (the same keys).
    event = replace(stored, id=uuid.uuid4().hex) if from_start else stored
    if from_start:
        state = await run_and_record(model, event, inbox=inbox, connection=stored.connection)
        return Replayed(old, model, event, state, "from the start")
    if old.state != "failed":
        raise ZapError(
            f"the run of {old.zap} on {old.event_id} is {old.state}: no step failed to replay "
            "from (--from-start runs it all again)"
        )
    pair = (old.event_id, old.zap)
    kept = (await inbox.load_steps([pair])).get(pair, {})
    done = {  # in the zap's order
        scope.step.id: kept[scope.step.id]
        for scope in model.walk()
        if scope.step.id in kept and kept[scope.step.id][0] in ("completed", "skipped")
    }
    started = datetime.now(UTC)
    state, saved = await _run_noting_steps(model, event, done)
    await inbox.rerecord_run(await result_of(model, event, state, started, saved))
    how = f"from step {old.failing_step!r}" if old.failing_step else "from the start"
    if done:
        how += f" ({', '.join(done)} done before, not run again)"
    return Replayed(old, model, event, state, how)


async def _run_noting_steps(
    zap: Zap, event: Event, done: dict[str, tuple[str, Any]]
) -> tuple[State, list[StepOutcome]]:
    """``run_with_history``, skipping the steps ``done`` before and noting each step's outcome
    (checkpoints, recorded with the run's ledger row)."""
    saved: list[StepOutcome] = []

    def save(step: str, status: str, output: object) -> None:
        saved.append(StepOutcome(event.id, zap.zap, step, status, output))

    token = RUN_JOURNAL.set(Journal(done=done, save=save, can_park=False))
    try:
        state = await run_with_history(zap, event)
    finally:
        RUN_JOURNAL.reset(token)
    return state, saved


async def _zap_for(inbox: Inbox, old: LedgerRun, zap_dirs: list[Path], version: str) -> Zap:
    if version == "recorded":
        if old.zap_version is None:
            raise ZapError(
                f"the run of {old.zap} on {old.event_id} recorded no zap version (it ran before "
                "zapflow recorded them); use --zap-version current"
            )
        kept = await inbox.zap_version(old.zap_version)
        if kept is None:
            raise ZapError(f"zap version {old.zap_version} of {old.zap} was not kept")
        return Zap.model_validate(kept[0])
    model = current_definition(old.zap, zap_dirs)
    if model is None:
        raise ZapError(f"zap {old.zap!r} is not in {', '.join(map(str, zap_dirs))}")
    return model


async def resume_waiting(
    ref: str, *, zap: str | None = None, inbox_url: str | None = None
) -> tuple[LedgerRun, datetime]:
    """Make a run parked in a delay go on now (``zapflow resume``): a running ``zapflow serve``
    sharing the inbox takes it within a second. Returns the run and the time it waited for."""
    inbox = await Inbox.open(inbox_url)
    try:
        run = await find_run(inbox, ref, zap, waiting=True)
        was = await inbox.resume_waiting(run.event_id, run.zap)
        if was is None:
            raise ZapError(f"the run of {run.zap} on {run.event_id} is not waiting any more")
        return run, was
    finally:
        await inbox.close()


async def cancel_waiting(
    ref: str, *, zap: str | None = None, inbox_url: str | None = None
) -> LedgerRun:
    """End a run parked in a delay for good (``zapflow cancel``): the ledger says
    ``cancelled``, its later steps never run, and its waiting step's task run is Cancelled."""
    from prefect.client.orchestration import get_client

    from flows.task_runs import set_task_run_final_state

    inbox = await Inbox.open(inbox_url)
    try:
        run = await find_run(inbox, ref, zap, waiting=True)
        saved = await inbox.cancel_waiting(run.event_id, run.zap, "cancelled by zapflow cancel")
        if saved is None:
            raise ZapError(f"the run of {run.zap} on {run.event_id} is not waiting any more")
    finally:
        await inbox.close()
    if saved.get("task_run"):
        async with get_client() as client:
            await set_task_run_final_state(
                client, saved["task_run"], "cancelled by zapflow cancel", cancel=True
            )
    return run
