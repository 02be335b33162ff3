"""Running a zap on one event: filter, then steps and paths in order.

This module knows nothing of Prefect. ``ZapRun`` walks a compiled zap (``flows.plan``) and
hands each action step's plan to a ``StepRunner``: ``run_step`` directly (``zapflow test``), or
the Prefect task the compiler wraps around it (``zapflow run``, serve, deployments), which adds
retries, timeouts and run history.
"""

from __future__ import annotations

import asyncio
import time
import types
import typing
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from connectors._contract import ActionContext
from connectors._errors import AuthError, RunParked, StepInputError
from connectors._storage import KeyValueStore
from flows import connections
from flows.connections import ConnectionProblem
from flows.errors import is_retryable
from flows.events import Event
from flows.model import ActionStep, PathsStep
from flows.plan import StepPlan, ZapPlan, describe
from flows.rendering import condition_holds, render


async def _zapflow_store() -> KeyValueStore:
    """zapflow's own store (the inbox's database), handed to actions as their storage."""
    from flows.intake.storage import current_store

    return await current_store()


StepStatus = Literal["completed", "skipped", "failed", "sampled", "waiting"]
RESUMED = "done before the run was resumed (its checkpoint)"
WAIT_OVER = "its wait is over: the run resumed after it"
DUE_SLACK = 0.05
"""A waiting step whose resume time is this close (seconds) is due."""


@dataclass
class StepRecord:
    """What one step did, for ``zapflow test`` and run summaries."""

    id: str
    action: str
    status: StepStatus
    input: Any = None
    output: Any = None
    error: str | None = None
    seconds: float = 0.0


@dataclass
class RunOutcome:
    status: Literal["completed", "filtered", "failed", "waiting"]
    steps: list[StepRecord] = field(default_factory=list)
    message: str = ""
    resume_at: datetime | None = None
    """A waiting run's resume time: it is parked in a delay step until then."""
    unsaved: list[Any] = field(default_factory=list)
    """A waiting run's step outcomes not committed yet (``Journal.hand_over``)."""
    retryable: bool = False
    """A failed run's error may pass if tried later (not a rejected input or credentials)."""

    @property
    def outputs(self) -> dict[str, Any]:
        return {s.id: s.output for s in self.steps if s.status != "skipped"}


@dataclass
class Skipped:
    """A step whose ``when`` did not hold."""

    reason: str


def sample_of(model: type[BaseModel]) -> dict[str, Any]:
    """Placeholder output for ``--dry-run`` of an action that would touch an app: a field's
    example, else its default, else a value of its type (``False``, ``0``, ``[]``, ``{}``, a
    nested model's placeholders, a Literal's first value; text reads ``<field>``), so a ``when:``
    or a filter on it reads the way it would on a real "empty" answer, not as a true string."""
    out: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        key = info.alias or name
        if info.examples:
            out[key] = info.examples[0]
        elif not info.is_required():
            out[key] = info.get_default(call_default_factory=True)
        else:
            out[key] = placeholder(info.annotation, key)
    return out


def placeholder(annotation: Any, key: str) -> Any:
    """A value of ``annotation``'s type standing in for an output not produced (dry run)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return placeholder(args[0], key)
    if origin is typing.Literal:
        return args[0]
    if origin in (typing.Union, types.UnionType):
        arms = [a for a in args if a is not type(None)]
        return placeholder(arms[0], key) if arms else None
    kind = origin or annotation
    if isinstance(kind, type):
        if issubclass(kind, BaseModel):
            return sample_of(kind)
        if issubclass(kind, bool):
            return False
        if issubclass(kind, int | float):
            return 0
        if issubclass(kind, list | tuple | set | frozenset):
            return []
        if issubclass(kind, dict):
            return {}
    return f"<{key}>"


async def run_step(
    plan: StepPlan,
    context: dict[str, Any],
    base: ActionContext,
    *,
    dry_run: bool = False,
) -> tuple[Any, Any] | Skipped:
    """Render a step's input, check it against its action, call the action.

    Returns ``(rendered input, output)``, or ``Skipped`` when the step's ``when`` is false.
    Under ``dry_run`` actions with side effects are not called: their output is a sample.
    """
    step, action, owner = plan.step, plan.action, plan.app
    if step.when is not None and not await condition_holds(
        step.when, context, f"steps.{step.id}.when"
    ):
        return Skipped(f"`when: {step.when}` was false")
    rendered = await render(step.input, context, f"steps.{step.id}.input")
    try:
        payload = action.input_model.model_validate(rendered)
    except ValidationError as exc:
        raise StepInputError(
            f"step {step.id!r}: input for {action.key} is not valid: {describe(exc)}"
        ) from None
    if dry_run and action.side_effects:
        return rendered, sample_of(action.output_model)
    connection = None
    if owner.connection is not None and plan.connection is not None:
        connection = await connections.resolve(owner, plan.connection)
    elif owner.connection_required:
        raise ConnectionProblem(f"step {step.id!r}: app {owner.name!r} needs a connection")
    ctx = ActionContext(
        zap_id=base.zap_id,
        step_id=step.id,
        run_id=base.run_id,
        event_id=base.event_id,
        connection=connection,
        connection_name=plan.connection,
        testing=base.testing or dry_run,
        can_park=base.can_park and not dry_run,
        logger=base.logger,
        storage=base.storage,
    )
    try:
        result = await action.run(payload, ctx)
    except AuthError:
        connections.forget(owner.name, plan.connection or "")
        raise
    return rendered, result.model_dump(mode="json", by_alias=True)


StepRunner = Callable[[StepPlan, dict[str, Any]], Awaitable[tuple[Any, Any] | Skipped]]


@dataclass
class Journal:
    """A run's step checkpoints: the steps done before (a resumed run skips them, reading their
    outputs from here), and where each step's outcome is kept, committed before the next step
    acts (``before_step``). The last step's outcome is committed with the run's end (``end``
    lets it go), so a one-step zap costs no extra commit."""

    done: dict[str, tuple[str, Any]] = field(default_factory=dict)
    """step id → ("completed", output) or ("skipped", None), from before."""
    save: Callable[[str, str, Any], None] | None = None
    """``save(step id, status, output)``: note a step's outcome, to be committed."""
    before_step: Callable[[], Awaitable[None]] | None = None
    """Returns once every outcome noted so far is committed."""
    end: Callable[[], None] | None = None
    """The run ended: outcomes not committed yet need not be."""
    can_park: bool = True
    """Whether a delay may park the run (it needs a dispatcher to resume it)."""
    hand_over: Callable[[], list[Any]] | None = None
    """The run parks: the outcomes not committed yet, taken from the queue, to be committed
    with the run's ledger row (``RunOutcome.unsaved``)."""


class ZapRun:
    """One run of one zap on one event."""

    def __init__(
        self,
        plan: ZapPlan,
        event: Event,
        *,
        run_id: str | None = None,
        dry_run: bool = False,
        testing: bool = False,
        journal: Journal | None = None,
        can_park: bool = False,
    ) -> None:
        """``dry_run``: call no app (sample outputs); ``testing``: call apps but never wait;
        ``journal``: step checkpoints (steps done before are not run again); ``can_park``: a
        delay ends the run's turn (``RunParked``, status ``waiting``) instead of sleeping."""
        zap = plan.zap
        self.plan, self.zap, self.event, self.dry_run = plan, zap, event, dry_run
        self.journal = journal or Journal()
        self.run_id = run_id or uuid.uuid4().hex
        self.base = ActionContext(
            zap_id=zap.zap,
            step_id="",
            run_id=self.run_id,
            event_id=event.id,
            testing=testing or dry_run,
            can_park=can_park and not (testing or dry_run),
            storage=_zapflow_store,
        )
        self.wait_over: Callable[[dict[str, Any], str], Awaitable[None]] | None = None
        """Called when a parked step's wait is over (with its checkpoint and a message), e.g.
        to show its task run completed."""
        self.records: list[StepRecord] = []
        self.context: dict[str, Any] = {
            "trigger": plan.payload(event),
            "steps": {},
            "zap": {"id": zap.zap, "description": zap.description},
            "run": {
                "id": self.run_id,
                "event_id": event.id,
                "time": datetime.now(UTC).isoformat(),
                "dry_run": dry_run,
            },
        }

    async def direct(self, step: StepPlan, context: dict[str, Any]) -> tuple[Any, Any] | Skipped:
        return await run_step(step, context, self.base, dry_run=self.dry_run)

    async def execute(self, runner: StepRunner | None = None) -> RunOutcome:
        runner = runner or self.direct
        for i, condition in enumerate(self.zap.filter):
            if not await condition_holds(condition, self.context, f"filter[{i}]"):
                return RunOutcome("filtered", self.records, f"filter[{i}] `{condition}` was false")
        try:
            await self._run_steps(self.zap.steps, runner)
        except RunParked as park:  # the run waits, stored with its last checkpoints
            unsaved = self.journal.hand_over() if self.journal.hand_over is not None else []
            waiting = next(r for r in reversed(self.records) if r.status == "waiting")
            when = park.resume_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            return RunOutcome(
                "waiting",
                self.records,
                f"step {waiting.id!r} waits until {when}",
                resume_at=park.resume_at,
                unsaved=unsaved,
            )
        except Exception as exc:  # the failing step is recorded; the caller decides what to raise
            failed = next((r for r in self.records if r.status == "failed"), None)
            where = f"step {failed.id!r} ({failed.action}) failed: " if failed else ""
            return RunOutcome(
                "failed",
                self.records,
                f"{where}{type(exc).__name__}: {exc}",
                retryable=is_retryable(exc),
            )
        finally:
            if self.journal.end is not None:
                self.journal.end()
        return RunOutcome("completed", self.records)

    async def _run_steps(self, steps: list[ActionStep | PathsStep], runner: StepRunner) -> None:
        for step in steps:
            if isinstance(step, PathsStep):
                await self._run_paths(step, runner)
            else:
                await self._run_action(step, runner)

    async def _run_action(self, step: ActionStep, runner: StepRunner) -> None:
        if step.id in self.journal.done and self.journal.done[step.id][0] == "waiting":
            await self._waited(step)
            return
        if step.id in self.journal.done:  # done before this run was resumed: not again
            status, output = self.journal.done[step.id]
            skipped = status == "skipped"
            self.records.append(
                StepRecord(
                    step.id,
                    step.action,
                    "skipped" if skipped else "completed",
                    output=None if skipped else output,
                    error=RESUMED,
                )
            )
            self.context["steps"][step.id] = None if skipped else output
            return
        if self.journal.before_step is not None:
            await self.journal.before_step()  # the steps before this one are committed
        started = time.perf_counter()
        record = StepRecord(step.id, step.action, "completed")
        self.records.append(record)
        try:
            result = await runner(self.plan.step(step), self.context)
        except RunParked as park:
            record.status, record.output = "waiting", park.checkpoint
            record.seconds = time.perf_counter() - started
            if self.journal.save is not None:
                self.journal.save(step.id, "waiting", park.checkpoint)
            raise
        except Exception as exc:
            record.status, record.error = "failed", f"{type(exc).__name__}: {exc}"
            record.seconds = time.perf_counter() - started
            raise
        record.seconds = time.perf_counter() - started
        if isinstance(result, Skipped):
            record.status, record.error = "skipped", result.reason
            self.context["steps"][step.id] = None
            if self.journal.save is not None:
                self.journal.save(step.id, "skipped", None)
            return
        record.input, record.output = result
        if self.dry_run and self.plan.step(step).action.side_effects:
            record.status = "sampled"
        self.context["steps"][step.id] = record.output
        if self.journal.save is not None and not self.dry_run:
            self.journal.save(step.id, "completed", record.output)

    async def _waited(self, step: ActionStep) -> None:
        """A step the run was parked in: its wait is over (the step completes with the output
        it gave when it parked), or not yet (the run parks again until then)."""
        saved: dict[str, Any] = self.journal.done[step.id][1] or {}
        resume_at = datetime.fromisoformat(saved.get("resume_at") or datetime.now(UTC).isoformat())
        left = (resume_at - datetime.now(UTC)).total_seconds()
        if left > DUE_SLACK and self.base.can_park:  # resumed early (a crash mid-park): again
            self.records.append(StepRecord(step.id, step.action, "waiting", output=saved))
            park = RunParked(resume_at, since=datetime.fromisoformat(saved["since"]))
            park.checkpoint = saved
            raise park
        if left > 0:
            await asyncio.sleep(left)
        output = saved.get("output")
        self.records.append(StepRecord(step.id, step.action, "completed", output=output))
        self.context["steps"][step.id] = output
        if self.journal.save is not None:
            self.journal.save(step.id, "completed", output)
        if self.wait_over is not None:
            await self.wait_over(saved, WAIT_OVER)

    async def _run_paths(self, step: PathsStep, runner: StepRunner) -> None:
        ran: list[str] = []
        for branch in step.paths:
            if branch.fallback:
                continue
            where = f"steps.{step.id}.paths.{branch.name}.when"
            if branch.when is None or await condition_holds(branch.when, self.context, where):
                ran.append(branch.name)
                await self._run_steps(branch.steps, runner)
        if not ran:
            for branch in step.paths:
                if branch.fallback:
                    ran.append(branch.name)
                    await self._run_steps(branch.steps, runner)
        self.context["steps"][step.id] = {"ran": ran}
