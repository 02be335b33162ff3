"""Zaps as Prefect deployments: ``zapflow deploy`` keeps one per zap on a work pool, and a run of
one — the UI's *Run*, the API, a schedule set in the UI — runs the zap on the event given, on
whichever Prefect worker takes it, and is entered in the run ledger like ``serve``'s runs.

Each deployment is ``zap/<zap id>``: the flow ``run_deployed_zap`` (named ``zap``, like the
engine's ``run_zap``) with the zap's definition as its ``zap`` parameter, the zap's version (a
hash of its content) as its version, tags ``zapflow``, ``zap:<id>``, ``app:<app>``, and the
zap's ``concurrency`` as its concurrency limit. Deploying again updates them; deployments of
zaps no longer in the folder are deleted (only those ``zapflow deploy`` made: tagged
``zap:<id>``). The runs record into the inbox at ``ZAPFLOW_INBOX_URL`` (the workers' environment),
else the default SQLite inbox of the worker's state folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterTags,
    FlowFilter,
    FlowFilterName,
)

from connectors._errors import ZapError
from flows.compiler import ZAPFLOW_TAG, flow_result, run_event, run_tags
from flows.events import Event
from flows.intake.db import RunResult, StepOutcome
from flows.intake.inbox import Inbox
from flows.model import Zap, zap_version
from flows.plan import ZapPlan, plan_of
from flows.prefect_bridge import ensure_work_pool
from flows.runtime import Journal

FLOW_NAME = "zap"
ENTRYPOINT = "flows/deployments.py:run_deployed_zap"
DEFAULT_POOL = "zapflow"


def event_for(plan: ZapPlan, given: dict[str, Any] | None) -> Event:
    """The event a deployment run starts from: a whole event (``app``, ``trigger``,
    ``payload``), or just the trigger's fields (as ``zapflow run --event`` takes them), or —
    when none is given — the zap's (else its trigger's) first sample."""
    if given and {"app", "trigger", "payload"} <= set(given):
        return Event.from_json(given)
    spec = plan.zap.trigger
    if given:
        payload = given
    elif plan.samples:
        payload = plan.samples[0]
    else:
        raise ZapError(
            f"zap {plan.id!r}: give the event to run on (its trigger's fields): "
            f"{spec.app}.{spec.event} has no sample"
        )
    return Event(app=spec.app, trigger=spec.event, payload=payload)


@flow(name=FLOW_NAME, persist_result=False)
async def run_deployed_zap(zap: dict[str, Any], event: dict[str, Any] | None = None) -> Any:
    """Run a zap (its definition) on one event, entered in the run ledger. ``event``: the
    trigger's fields, or a whole event; none: the zap's first sample."""
    from prefect.context import FlowRunContext

    model = Zap.model_validate(zap)
    plan = plan_of(model)
    chosen = event_for(plan, event)
    started = datetime.now(UTC)
    saved: list[StepOutcome] = []

    def save(step: str, status: str, output: Any) -> None:
        saved.append(StepOutcome(chosen.id, model.zap, step, status, output))

    # A delay sleeps here: no dispatcher shares this worker to resume a parked run.
    journal = Journal(save=save, can_park=False)
    result = await run_event(plan, chosen, journal=journal)
    outcome = result.outcome
    ctx = FlowRunContext.get()
    flow_run_id = str(ctx.flow_run.id) if ctx and ctx.flow_run else None
    failing = next((s.id for s in outcome.steps if s.status == "failed"), None)
    ledger = await Inbox.open(os.environ.get("ZAPFLOW_INBOX_URL"))
    try:
        await ledger.record_run(
            replace(chosen, connection=model.trigger.connection, zap=model.zap),
            RunResult(
                event_id=chosen.id,
                zap=model.zap,
                state=outcome.status,
                flow_run_id=flow_run_id,
                failing_step=failing,
                message=outcome.message or None,
                started_at=started,
                zap_version=plan.version,
                steps=tuple(saved),
            ),
        )
    finally:
        await ledger.close()
    return flow_result(outcome)


@dataclass
class Deployed:
    """What ``deploy`` did."""

    pool_made: bool = False
    made: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


async def deploy(
    client: PrefectClient,
    zaps: list[Zap],
    *,
    pool: str = DEFAULT_POOL,
    project_dir: Path,
) -> Deployed:
    """Create or update one deployment per zap on ``pool`` (made, of type ``process``, if it
    does not exist), and delete the deployments of zaps no longer given. ``project_dir``: where
    the workers find this project (their runs start there)."""
    from prefect.exceptions import ObjectNotFound

    done = Deployed(pool_made=await ensure_work_pool(client, pool))
    flow_id = await client.create_flow_from_name(FLOW_NAME)
    schema = run_deployed_zap.parameters.model_dump_for_openapi()
    pull = [{"prefect.deployments.steps.set_working_directory": {"directory": str(project_dir)}}]
    for zap in zaps:
        try:
            await client.read_deployment_by_name(f"{FLOW_NAME}/{zap.zap}")
            known = True
        except ObjectNotFound:
            known = False
        await client.create_deployment(  # an upsert by (flow, name)
            flow_id=flow_id,
            name=zap.zap,
            version=zap_version(zap),
            description=zap.description or f"Runs zap {zap.zap} on one event",
            parameters={"zap": zap.model_dump(mode="json", exclude_defaults=True)},
            parameter_openapi_schema=schema,
            enforce_parameter_schema=True,
            tags=run_tags(zap),
            work_pool_name=pool,
            entrypoint=ENTRYPOINT,
            path=str(project_dir),
            pull_steps=pull,
            concurrency_limit=zap.concurrency,
            paused=not zap.enabled,
        )
        (done.updated if known else done.made).append(zap.zap)
    wanted = {zap.zap for zap in zaps}
    ours = await client.read_deployments(
        flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])),
        deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=[ZAPFLOW_TAG])),
    )
    for deployment in ours:
        if deployment.name in wanted or f"zap:{deployment.name}" not in deployment.tags:
            continue  # a zap's, or not made by zapflow deploy (prefect.yaml's `zapflow`)
        await client.delete_deployment(deployment.id)
        done.deleted.append(deployment.name)
    return done
