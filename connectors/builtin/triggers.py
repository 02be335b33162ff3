"""Triggers of the built-in app."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from connectors.builtin._app import app


class HookPayload(BaseModel):
    """Any JSON object; its keys are what the zap reads as ``trigger.<key>``."""

    model_config = ConfigDict(extra="allow")


app.trigger(
    "catch_hook",
    title="Catch hook",
    description="Starts the zap with whatever JSON object is posted to the zap's hook URL.",
    payload=HookPayload,
    samples=[
        {"id": "order-1001", "customer": "Chan Tai Man", "phone": "+85291234567", "total": 42.5}
    ],
)


class ZapFailedOptions(BaseModel):
    """Which failures start the zap (every one when a list is empty)."""

    model_config = ConfigDict(extra="forbid")

    zaps: list[str] = Field(default_factory=list, description="Only these zaps' failures")
    apps: list[str] = Field(
        default_factory=list, description="Only failures of zaps triggered by these apps"
    )
    kinds: list[Literal["transient", "permanent", "could_not_run"]] = Field(
        default_factory=list,
        description=(
            "Only these kinds of error: transient (retries and autoreplays spent), permanent "
            "(rejected input or credentials), could_not_run (the event itself could not be run)"
        ),
    )


class ZapFailedPayload(BaseModel):
    """A zap run that finally failed (after its retries and autoreplays)."""

    zap: str = Field(description="The zap whose run failed")
    event_id: str = Field(description="The event it ran on")
    app: str = Field(description="The failed zap's trigger app")
    trigger: str = Field(description="The failed zap's trigger")
    failing_step: str | None = Field(None, description="The step that failed, if one did")
    error: str = Field(description="What went wrong (no secrets: as `zapflow runs` shows it)")
    kind: Literal["transient", "permanent", "could_not_run"] = Field(
        description="transient, permanent or could_not_run"
    )
    autoreplays: int = Field(0, description="Autoreplays tried before it failed for good")
    failed_at: datetime = Field(description="When it failed for good (UTC)")
    flow_run_id: str | None = Field(None, description="The Prefect flow run that recorded it")
    replay_command: str = Field(description="What replays it from its failed step")
    payload: dict[str, Any] = Field(
        default_factory=dict, description="The failed run's trigger payload (its event's data)"
    )


def _accepts(options: dict[str, Any], payload: dict[str, Any]) -> bool:
    wanted = ZapFailedOptions.model_validate(options)
    return (
        (not wanted.zaps or payload.get("zap") in wanted.zaps)
        and (not wanted.apps or payload.get("app") in wanted.apps)
        and (not wanted.kinds or payload.get("kind") in wanted.kinds)
    )


app.trigger(
    "zap_failed",
    title="Zap run failed",
    description=(
        "Starts the zap when another zap's run fails for good (after its retries and "
        "autoreplays), with the failed zap, event, step, error and a replay command. A zap "
        "with this trigger that fails does not start any (no loops)."
    ),
    payload=ZapFailedPayload,
    samples=[
        {
            "zap": "missed-enquiry-sms",
            "event_id": "4f1c2a9be0d34c55a1d2e3f405162738",
            "app": "cinnox",
            "trigger": "missed_enquiry",
            "failing_step": "sms",
            "error": "step 'sms' (cinnox.send_sms) failed: RetryableError: CINNOX answered 503",
            "kind": "transient",
            "autoreplays": 5,
            "failed_at": "2026-12-03T10:00:00+00:00",
            "flow_run_id": None,
            "replay_command": "zapflow replay 4f1c2a9be0d3 --zap missed-enquiry-sms",
            "payload": {"enquiry_id": "enq-1001", "customer_phone": "+85291234567"},
        }
    ],
    kind="internal",
    options=ZapFailedOptions,
    accepts=_accepts,
)
