"""Zap runs as recorded by the Prefect server: listing them, and running one again.

Every zap run is a flow run tagged ``zapflow`` and ``zap:<id>`` whose parameters hold the zap
definition and the trigger event, so a run can always be replayed from what it stored.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterTags,
    TaskRunFilter,
    TaskRunFilterState,
    TaskRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort

from flows.compiler import ZAPFLOW_TAG, run_with_history
from flows.errors import ZapError
from flows.loader import load_all
from flows.model import Zap
from flows.runtime import Event


@dataclass
class RunRow:
    id: str
    zap: str
    event: str
    state: str
    started: datetime | None
    duration: timedelta | None
    failing_step: str | None
    message: str


def _zap_of(run: FlowRun) -> str:
    for tag in run.tags:
        if tag.startswith("zap:"):
            return tag[4:]
    return str(run.parameters.get("zap", {}).get("zap", "?"))


def _event_of(run: FlowRun) -> str:
    try:
        return Event.model_validate(run.parameters["event"]).label
    except Exception:
        return "?"


async def recent_runs(limit: int = 20, zap: str | None = None) -> list[RunRow]:
    tags = [ZAPFLOW_TAG] + ([f"zap:{zap}"] if zap else [])
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=tags)),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            limit=limit,
        )
        failed = [r.id for r in runs if r.state_type in (StateType.FAILED, StateType.CRASHED)]
        failing: dict[uuid.UUID, str] = {}
        if failed:
            tasks = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=failed)),
                task_run_filter=TaskRunFilter(
                    state=TaskRunFilterState(type=TaskRunFilterStateType(any_=[StateType.FAILED]))
                ),
            )
            for t in tasks:
                if t.flow_run_id is not None:
                    failing.setdefault(t.flow_run_id, t.name)
    return [
        RunRow(
            id=str(r.id),
            zap=_zap_of(r),
            event=_event_of(r),
            state=r.state_name or "?",
            started=r.start_time,
            duration=(r.end_time - r.start_time) if r.end_time and r.start_time else None,
            failing_step=failing.get(r.id),
            message=(r.state.message or "") if r.state else "",
        )
        for r in runs
    ]


async def find_run(ref: str) -> FlowRun:
    """A zap run by its id, or by a unique prefix of the id among recent runs."""
    async with get_client() as client:
        try:
            return await client.read_flow_run(uuid.UUID(ref))
        except ValueError:
            pass
        except Exception as exc:
            raise ZapError(f"no run with id {ref}: {exc}") from None
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[ZAPFLOW_TAG])),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            limit=200,
        )
    matches = [r for r in runs if str(r.id).startswith(ref)]
    if len(matches) != 1:
        found = "no run" if not matches else f"{len(matches)} runs"
        raise ZapError(f"{found} among the last 200 has an id starting with {ref!r}")
    return matches[0]


def current_definition(zap_id: str, zap_dirs: list[Path]) -> Zap | None:
    loaded, _ = load_all([d for d in zap_dirs if d.exists()])
    return next((z.zap for z in loaded if z.zap.zap == zap_id), None)


async def replay(ref: str, zap_dirs: list[Path]) -> tuple[FlowRun, Zap, bool, Any]:
    """Run a recorded zap run again on its stored event.

    Uses the zap's current file when one with the same id is found (so a fixed zap can be
    replayed), else the definition the run stored. Returns (old run, zap, from_file, new state).
    """
    old = await find_run(ref)
    params = old.parameters
    if "zap" not in params or "event" not in params:
        raise ZapError(f"run {old.id} is not a zap run (it has no zap and event parameters)")
    stored = Zap.model_validate(params["zap"])
    current = current_definition(stored.zap, zap_dirs)
    zap = current or stored
    event = Event.model_validate(params["event"])
    state = await run_with_history(zap, event)
    return old, zap, current is not None, state
