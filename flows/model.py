"""The zap language: what a zap file may say, as pydantic models.

These models are the one source of truth for zap files: ``loader`` validates files with them,
``zapflow schema`` turns them into the JSON Schema editors use, and the runtime reads them.
What depends on installed apps (does this action exist, does this input fit it) is checked by
``loader`` on top of these models.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    field_validator,
    model_validator,
)

from connectors._rates import RateSetting
from connectors._units import DURATION_HELP, Duration, parse_duration, parse_size

__all__ = ["DURATION_HELP", "Duration", "parse_duration", "parse_size"]  # re-exported

# --------------------------------------------------------------------------- pieces

STEP_ID = r"^[A-Za-z_][A-Za-z0-9_]*$"
MAX_ZAP_ID = 63
ZAP_ID = r"^[a-z0-9][a-z0-9_-]{0,62}$"
ON_FAILURE = "--on-failure"
"""The id suffix of the zap a zap's ``on_failure`` steps run as."""
CONNECTION_NAME = r"^[a-z0-9][a-z0-9-]{0,39}$"

Condition = Annotated[
    str,
    Field(
        min_length=1,
        description="A Jinja expression, bare or in {{ }}, e.g. \"trigger.channel == 'WhatsApp'\"",
    ),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TriggerSpec(_Strict):
    """What starts the zap: an app's trigger event, seen through one of its connections."""

    app: str = Field(description="The app, e.g. cinnox")
    event: str = Field(description="The app's trigger, e.g. missed_enquiry")
    connection: str | None = Field(
        None, pattern=CONNECTION_NAME, description="Name of the app connection to use"
    )
    options: dict[str, Any] = Field(default_factory=dict, description="Trigger settings")
    samples: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Example payloads for `zapflow test`; default: the trigger's own samples",
    )


class StepPolicy(_Strict):
    """How a step is retried and how long it may take."""

    retries: int | None = Field(None, ge=0, le=25, description="Retries after a transient failure")
    retry_delay: Duration | None = Field(None, description="Wait before the first retry")
    retry_backoff: float | None = Field(
        None, ge=1, le=10, description="Each further retry waits this many times longer"
    )
    retry_jitter: float | None = Field(
        None, ge=0, le=1, description="Random spread of each wait, as a fraction of it"
    )
    timeout: Duration | None = Field(None, description="Longest one attempt may take")


DEFAULT_POLICY = StepPolicy(
    retries=2,
    retry_delay=timedelta(seconds=2),
    retry_backoff=2.0,
    retry_jitter=0.2,
    timeout=timedelta(seconds=120),
)


class _StepBase(_Strict):
    id: str = Field(pattern=STEP_ID, description="Unique in the zap; later steps read steps.<id>")
    description: str = ""
    when: Condition | None = Field(None, description="Run this step only when this holds")


class ActionStep(_StepBase, StepPolicy):
    """A step that calls one action of an app."""

    action: str = Field(pattern=r"^[a-z0-9_]+\.[a-z0-9_]+$", description="app.action_name")
    connection: str | None = Field(
        None,
        pattern=CONNECTION_NAME,
        description="Connection to use; defaults to the trigger's when the app is the same",
    )
    input: dict[str, Any] = Field(default_factory=dict, description="The action's input fields")


class Branch(_Strict):
    """One branch of a paths step."""

    name: str = Field(pattern=STEP_ID)
    when: Condition | None = Field(None, description="Run this branch when this holds")
    fallback: bool = Field(False, description="Run this branch only when no other branch ran")
    steps: list[Step] = Field(min_length=1)

    @model_validator(mode="after")
    def _fallback_has_no_condition(self) -> Branch:
        if self.fallback and self.when is not None:
            raise ValueError("a fallback branch runs when no other branch did; it takes no `when`")
        return self


class PathsStep(_StepBase):
    """Branches: every branch whose `when` holds runs its own steps, in order."""

    paths: list[Branch] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_fallback(self) -> PathsStep:
        if sum(b.fallback for b in self.paths) > 1:
            raise ValueError("at most one branch may be the fallback")
        names = [b.name for b in self.paths]
        if len(set(names)) != len(names):
            raise ValueError(f"branch names must be unique, got {names}")
        return self


def _step_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        return "paths-step" if "paths" in value else "action-step"
    return "paths-step" if isinstance(value, PathsStep) else "action-step"


Step = Annotated[
    Annotated[ActionStep, Tag("action-step")] | Annotated[PathsStep, Tag("paths-step")],
    Discriminator(_step_kind),
]
UNION_TAGS = frozenset({"action-step", "paths-step"})
"""Tags pydantic puts into error locations; not part of the path a user wrote."""

Branch.model_rebuild()


class Flood(_Strict):
    """Flood protection: at most ``max`` runs of the zap start in any ``per``; events above
    that are held (not dropped) until released or discarded by hand."""

    max: int = Field(ge=1, le=1_000_000, description="Runs that may start in any `per`")
    per: Duration = Field(description="The window, e.g. 10m")


class Zap(_Strict):
    """One zap: when the trigger fires and the filter holds, run the steps."""

    model_config = ConfigDict(
        extra="forbid", title="zapflow zap", json_schema_extra={"$id": "zapflow-zap"}
    )

    zap: str = Field(pattern=ZAP_ID, description="The zap's id: lowercase, digits, - and _")
    description: str = ""
    enabled: bool = True
    trigger: TriggerSpec
    filter: list[Condition] = Field(
        default_factory=list, description="Every condition must hold, else the run is filtered"
    )
    defaults: StepPolicy = Field(
        default_factory=lambda: StepPolicy(), description="Retry and timeout policy for every step"
    )
    steps: list[Step] = Field(min_length=1)
    flood: Flood | Literal["off"] | None = Field(
        None,
        description=(
            "Flood protection, e.g. {max: 100, per: 10m}: runs above the limit are held until "
            "`zapflow release` or `zapflow discard`. Default: on for polling triggers (100 per "
            "10 minutes, as Zapier), off for the others; `off` turns it off"
        ),
    )
    concurrency: int | None = Field(
        None,
        ge=1,
        le=10_000,
        description=(
            "At most this many runs of the zap at once, counted across every zapflow serve "
            "sharing the inbox (1: one at a time, in order of arrival); runs beyond wait, "
            "queued, and start as runs end. Default: no limit but serve's --concurrency"
        ),
    )
    rate_limit: RateSetting | None = Field(
        None,
        description=(
            "At most this many runs of the zap start in any period, e.g. 60/min or 10/s, "
            "counted across every serve sharing the inbox; runs beyond wait, queued, and start "
            "as the window allows (an app account's own API limit is its connection's "
            "rate_limit)"
        ),
    )
    on_failure: list[Step] = Field(
        default_factory=list,
        description=(
            "Steps that run when a run of this zap fails for good (after its retries and "
            "autoreplays), as the zap `<id>--on-failure`: `trigger.*` there is the failure "
            "(zap, event_id, failing_step, error, kind, replay_command, and the failed run's "
            "trigger payload as `trigger.payload`). Their failure starts nothing (no loops)"
        ),
    )
    autoreplay: Literal["standard", "off"] | list[Duration] = Field(
        "off",
        description=(
            "Replay a run that finally failed from its failed step, later: `standard` (5 tries "
            "at 5m, 30m, 1h, 3h, 6h, as Zapier's) or a list of waits, e.g. [1m, 10m]. A "
            "permanent error (rejected input or credentials) is not replayed"
        ),
    )

    @field_validator("flood", "autoreplay", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        # YAML reads a bare `off` as false.
        return "off" if value is False else value

    @field_validator("autoreplay")
    @classmethod
    def _autoreplay_waits(cls, value: Any) -> Any:
        if isinstance(value, list):
            if not 1 <= len(value) <= 10:
                raise ValueError("give 1 to 10 waits, e.g. [5m, 30m, 1h]")
            if any(not timedelta(seconds=1) <= wait <= timedelta(days=31) for wait in value):
                raise ValueError("each wait is between 1s and 31 days")
        return value

    @model_validator(mode="after")
    def _failure_zap_id(self) -> Zap:
        if self.on_failure and len(self.zap) + len(ON_FAILURE) > MAX_ZAP_ID:
            raise ValueError(
                f"a zap with on_failure steps has an id of at most "
                f"{MAX_ZAP_ID - len(ON_FAILURE)} characters (its steps run as the zap "
                f"'<id>{ON_FAILURE}')"
            )
        return self

    def walk(self) -> Iterator[StepScope]:
        """Every step, depth first, with the path and the steps it may read."""
        yield from _walk(self.steps, ("steps",), ())


@dataclass(frozen=True)
class StepScope:
    step: ActionStep | PathsStep
    path: tuple[str | int, ...]
    visible: tuple[str, ...]
    """Ids of steps that have surely run before this one: it may reference exactly these."""


def _walk(
    steps: list[ActionStep | PathsStep], path: tuple[str | int, ...], before: tuple[str, ...]
) -> Iterator[StepScope]:
    visible = before
    for i, step in enumerate(steps):
        yield StepScope(step, (*path, i), visible)
        if isinstance(step, PathsStep):
            for b, branch in enumerate(step.paths):
                yield from _walk(branch.steps, (*path, i, "paths", b, "steps"), visible)
        visible = (*visible, step.id)


def step_connection(zap: Zap, step: ActionStep) -> str | None:
    """The connection a step uses: its own, else the trigger's when both are the same app."""
    if step.connection is not None:
        return step.connection
    if step.action.split(".", 1)[0] == zap.trigger.app:
        return zap.trigger.connection
    return None


def effective_policy(zap: Zap, step: ActionStep) -> StepPolicy:
    """The step's own settings, else the zap's defaults, else zapflow's."""
    merged = DEFAULT_POLICY.model_dump()
    for layer in (zap.defaults, step):
        merged.update(
            {k: v for k, v in layer.model_dump(include=set(merged)).items() if v is not None}
        )
    return StepPolicy(**merged)


ZAP_ADAPTER: TypeAdapter[Zap] = TypeAdapter(Zap)


def zap_version(zap: Zap) -> str:
    """The zap's version: the first 12 hex digits of the SHA-256 of its content (canonical
    JSON, defaults left out), the same for the same zap wherever and whenever it is loaded.
    Each run records it (``zapflow runs``, the Prefect flow run's version)."""
    import hashlib
    import json

    content = json.dumps(
        zap.model_dump(mode="json", by_alias=True, exclude_defaults=True),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(content.encode()).hexdigest()[:12]


def failure_zap(zap: Zap) -> Zap | None:
    """The zap a zap's ``on_failure`` steps run as (None without any): ``<id>--on-failure``,
    triggered by ``builtin.zap_failed`` for this zap alone, with the zap's step defaults."""
    if not zap.on_failure:
        return None
    return Zap(
        zap=zap.zap + ON_FAILURE,
        description=f"The on_failure steps of zap {zap.zap!r}",
        enabled=zap.enabled,
        trigger=TriggerSpec(app="builtin", event="zap_failed", options={"zaps": [zap.zap]}),
        defaults=zap.defaults,
        steps=zap.on_failure,
    )


def with_failure_zaps(zaps: Iterable[Zap]) -> list[Zap]:
    """The zaps, each followed by the zap its ``on_failure`` steps run as, if it has any."""
    out: list[Zap] = []
    for zap in zaps:
        out.append(zap)
        derived = failure_zap(zap)
        if derived is not None:
            out.append(derived)
    return out


STANDARD_AUTOREPLAY = [
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=1),
    timedelta(hours=3),
    timedelta(hours=6),
]
"""Zapier's autoreplay schedule: five tries, 5 m, 30 m, 1 h, 3 h and 6 h after each failure."""


def autoreplay_schedule(zap: Zap) -> list[timedelta]:
    """The waits before each autoreplay of a failed run ([] when off)."""
    if zap.autoreplay == "standard":
        return STANDARD_AUTOREPLAY
    if isinstance(zap.autoreplay, list):
        return list(zap.autoreplay)
    return []


POLLING_FLOOD = Flood(max=100, per=timedelta(minutes=10))
"""Flood protection of zaps with a polling trigger that do not set ``flood``."""
