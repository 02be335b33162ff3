"""A zap compiled into a plan: its trigger, each step's action, app, models, policy and
connection bound once, so that a run only executes.

A zap is compiled when it is loaded or changed (the zap folder ``zapflow serve`` follows,
``zapflow run``/``test``, a deployment's flow run); ``plan_of`` hands every later run of the same
loaded definition the same plan. A run then makes no registry lookup, works out no step's
retry policy or connection again, and validates its trigger payload once (``ZapPlan.payload``).
The runtime (``flows.runtime``) and the Prefect side (``flows.compiler``, ``flows.task_runs``)
read plans; nothing here knows of Prefect.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel, ValidationError

from connectors import registry
from connectors._contract import Action, App, Trigger
from connectors._errors import StepInputError
from flows.events import Event
from flows.loader import format_path
from flows.model import (
    ActionStep,
    StepPolicy,
    Zap,
    effective_policy,
    step_connection,
    zap_version,
)


@dataclass(frozen=True, eq=False)
class StepPlan:
    """One action step, bound: what it calls and how."""

    step: ActionStep
    action: Action
    app: App
    policy: StepPolicy
    """The step's retries and timeout: its own, else the zap's defaults, else zapflow's."""
    connection: str | None
    """The connection it uses: its own, else the trigger's when both are the same app."""
    task_key: str
    """Its Prefect task key, ``<zap>.<step>`` (the same across runs and versions)."""

    @property
    def id(self) -> str:
        return self.step.id

    @property
    def input_model(self) -> type[BaseModel]:
        return self.action.input_model

    @property
    def output_model(self) -> type[BaseModel]:
        return self.action.output_model


@dataclass(frozen=True, eq=False)
class ZapPlan:
    """A zap, compiled (``compile_plan``)."""

    zap: Zap
    version: str
    """A hash of the zap's content (``flows.model.zap_version``), recorded by each run."""
    trigger: Trigger
    steps: Mapping[str, StepPlan]
    """Every action step, in paths too, by id (ids are unique within a zap)."""

    @property
    def id(self) -> str:
        return self.zap.zap

    def step(self, step: ActionStep) -> StepPlan:
        return self.steps[step.id]

    @property
    def samples(self) -> list[dict[str, Any]]:
        """The payloads a run without an event of its own uses: the zap's samples, else its
        trigger's."""
        return self.zap.trigger.samples or list(self.trigger.samples)

    def payload(self, event: Event) -> dict[str, Any]:
        """The trigger payload as templates see it: the event's payload validated, once per
        run, by the trigger's payload model (defaults filled in, names as the app gives them).
        Raises ``StepInputError`` naming the fields when it does not fit the trigger."""
        try:
            model = self.trigger.payload_model.model_validate(event.payload)
        except ValidationError as exc:
            raise StepInputError(
                f"the event does not fit trigger {self.trigger.key}: {describe(exc)}"
            ) from None
        return model.model_dump(mode="json", by_alias=True)


def describe(exc: ValidationError) -> str:
    """A pydantic error as one line naming each field and what is wrong with it."""
    return "; ".join(
        f"{format_path(e['loc']) or '(whole input)'}: {e['msg']}"
        for e in exc.errors(include_url=False)
    )


def compile_step(zap: Zap, step: ActionStep) -> StepPlan:
    """One action step of ``zap``, bound (raises ``registry.UnknownName`` for an action no
    installed app declares)."""
    action = registry.action(step.action)
    return StepPlan(
        step=step,
        action=action,
        app=registry.app(action.app),
        policy=effective_policy(zap, step),
        connection=step_connection(zap, step),
        task_key=f"{zap.zap}.{step.id}",
    )


def compile_plan(zap: Zap) -> ZapPlan:
    """Bind a zap to the installed apps. Raises ``registry.UnknownName`` for a trigger or action
    no installed app declares (the loader has said so with the file's line before)."""
    steps = {
        scope.step.id: compile_step(zap, scope.step)
        for scope in zap.walk()
        if isinstance(scope.step, ActionStep)
    }
    return ZapPlan(
        zap=zap,
        version=zap_version(zap),
        trigger=registry.trigger(zap.trigger.app, zap.trigger.event),
        steps=MappingProxyType(steps),
    )


_PLANS: OrderedDict[int, ZapPlan] = OrderedDict()
_KEEP = 1024
"""Plans kept (the most recently used): more than the zaps any one process serves."""


def plan_of(zap: Zap) -> ZapPlan:
    """The plan of this loaded definition: compiled on first use, then the same one for as
    long as the definition is in use (a changed zap is a new definition: compiled again)."""
    key = id(zap)
    plan = _PLANS.get(key)
    if plan is not None and plan.zap is zap:  # the plan holds the zap: its id is not reused
        _PLANS.move_to_end(key)
        return plan
    plan = _PLANS[key] = compile_plan(zap)
    if len(_PLANS) > _KEEP:
        _PLANS.popitem(last=False)
    return plan
