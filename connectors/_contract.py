"""How an app declares itself to zapflow.

An app is mostly a declaration: a connection model (its credentials), triggers (a payload model
and sample payloads; for a polling trigger also an options model and one async function) and
actions (an input model, an output model and one async function).
Models are the single source of truth: they validate zap files at load time, check rendered
inputs at run time, produce the JSON Schema editors use and the generated reference docs.

    app = App("builtin", title="Built-in tools")

    @app.action("lookup", title="Lookup table")
    async def lookup(input: LookupInput, ctx: ActionContext) -> LookupOutput:
        ...

    @app.polling_trigger("new_rows", title="New row", payload=Row, samples=[...],
                         interval=timedelta(minutes=5))
    async def new_rows(sheet: Sheet, options: NewRowsOptions, cursor: dict | None) -> PollResult:
        ...  # PollResult(items=[(row_id, row), ...], cursor={"last_row": 42})
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated, Any, Literal, get_type_hints

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from connectors._storage import KeyValueStore, no_storage
from connectors._units import Duration

TriggerKind = Literal["webhook", "polling", "schedule", "internal"]
"""``internal``: events zapflow itself makes (a zap run that failed), never delivered from
outside."""


@dataclass
class ActionContext:
    """What an action knows about the run it is part of.

    ``idempotency_key`` is stable for one (event, zap, step): an app that supports idempotent
    requests should send it, so a retried or replayed step does not act twice.
    ``testing`` is set by ``zapflow test``: actions that would wait (delays) return at once.
    """

    zap_id: str
    step_id: str
    run_id: str
    event_id: str
    connection: Any = None
    """The step's connection (the app's connection model), when the app has one."""
    connection_name: str | None = None
    testing: bool = False
    can_park: bool = False
    """The run can be parked (``zapflow serve``): a long wait raises ``RunParked`` instead of
    sleeping, and the run resumes after this step when it is due."""
    logger: logging.Logger | logging.LoggerAdapter[Any] = field(
        default_factory=lambda: logging.getLogger("zapflow.action")
    )
    storage: Callable[[], Awaitable[KeyValueStore]] = no_storage
    """The store of values kept between runs (the storage port: ``connectors._storage``),
    opened on first use; the engine hands zapflow's database here."""

    @property
    def idempotency_key(self) -> str:
        return f"{self.event_id}:{self.zap_id}:{self.step_id}"


@dataclass(frozen=True)
class Inbound:
    """One trigger event an app's webhook delivery carries."""

    trigger: str
    payload: dict[str, Any]
    key: str | None = None
    """What identifies this occurrence (for de-duplicating redeliveries); None when the app's
    payload has nothing that does — then a redelivery runs again rather than risk dropping a
    real, identical event."""


@dataclass(frozen=True)
class WebhookReply:
    """An answer the app expects instead of an event (e.g. a URL verification challenge)."""

    body: dict[str, Any]
    status: int = 200


WebhookAdapter = Callable[[str, Any], "list[Inbound] | WebhookReply"]
"""``adapter(channel, body)``: what a delivery on the app's hook URL means. ``channel`` is the
last segment of the URL (for CINNOX, the event family); ``body`` is the delivered JSON (usually
an object, but any JSON value). Raises ValueError, saying why, for a body it cannot read: the
receiver then keeps the delivery as unrecognised, to be reprocessed once the app reads it."""

ActionFunction = Callable[[Any, ActionContext], Awaitable[BaseModel]]
ConnectionCheck = Callable[[Any, str], Awaitable[str]]


@dataclass(frozen=True)
class PollResult:
    """What one poll found: the items, and where the next poll should start."""

    items: list[tuple[str, dict[str, Any]]]
    """``(dedupe key, payload)`` per item, in the order the zap should run on them. The key
    identifies the item for good (its id): an item whose key was seen before is not new."""
    cursor: dict[str, Any] | None = None
    """Handed to the next poll (JSON); kept in the inbox only once this poll's events are."""


PollFunction = Callable[[Any, Any, "dict[str, Any] | None"], Awaitable[PollResult]]
"""``poll(connection, options, cursor)``: the items there are now (the connection is None when
the zap names none; the cursor is None on the first poll). Raises the engine's errors."""


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be more than 0")
    return value


PositiveDuration = Annotated[Duration, AfterValidator(_positive)]


class EmptyMeansDefault(BaseModel):
    """A connection model where a field given as empty text (``--set port=``, an empty
    environment variable) takes its default instead of failing validation."""

    @model_validator(mode="before")
    @classmethod
    def _empty_is_default(cls, values: Any) -> Any:
        if isinstance(values, dict):
            return {k: v for k, v in values.items() if not (isinstance(v, str) and not v.strip())}
        return values


class PollingOptions(BaseModel):
    """Settings every polling trigger takes; a trigger's options model adds its own fields."""

    model_config = ConfigDict(extra="forbid")

    interval: PositiveDuration | None = Field(
        None,
        description="How often to poll, e.g. 30s or 5m; default: the trigger's own. "
        "`zapflow serve` polls at most once a second",
    )
    skip_existing: bool = Field(
        True,
        description="On the zap's first poll, only note the items already there (they do not "
        "run the zap); false: run the zap on them too",
    )


SCHEDULE_FIELDS = ("cron", "timezone")
"""What a schedule trigger's options model must have: when it fires (a cron expression) and
in which time zone (an IANA name). The engine fires it; the app only declares it."""


@dataclass(frozen=True)
class Action:
    """One thing a zap step can do in an app."""

    app: str
    name: str
    title: str
    description: str
    input_model: type[BaseModel]
    output_model: type[BaseModel]
    run: ActionFunction
    side_effects: bool = True
    """False for pure actions (formatters, lookups): ``--dry-run`` runs them for real."""

    @property
    def key(self) -> str:
        return f"{self.app}.{self.name}"


@dataclass(frozen=True)
class Trigger:
    """One kind of event an app starts zaps with."""

    app: str
    name: str
    title: str
    description: str
    payload_model: type[BaseModel]
    samples: tuple[dict[str, Any], ...]
    kind: TriggerKind = "webhook"
    options_model: type[BaseModel] | None = None
    """Validates the zap's ``trigger.options`` at load time; None: options are not checked."""
    poll: PollFunction | None = None
    """Polling triggers: the function that asks the app what is there."""
    interval: timedelta | None = None
    """Polling triggers: how often to poll when the zap does not say."""
    accepts: Callable[[dict[str, Any], dict[str, Any]], bool] | None = None
    """``accepts(zap's trigger options, event payload)``: whether an event of this trigger
    starts that zap (None: every one does)."""

    @property
    def key(self) -> str:
        return f"{self.app}.{self.name}"


class App:
    """An app's declaration: its connection, triggers and actions."""

    def __init__(
        self,
        name: str,
        *,
        title: str,
        description: str = "",
        connection: type[BaseModel] | None = None,
        connection_required: bool = True,
    ) -> None:
        """``connection_required=False``: steps may also run without a connection (an HTTP
        request to a public URL); their ``ActionContext.connection`` is then None."""
        self.name = name
        self.title = title
        self.description = description
        self.connection = connection
        self.connection_required = connection is not None and connection_required
        self.triggers: dict[str, Trigger] = {}
        self.actions: dict[str, Action] = {}
        self.check: ConnectionCheck | None = None
        self.webhook: WebhookAdapter | None = None
        self.webhook_channels: tuple[str, ...] = ()
        """The channels (last segment of a hook URL) the app's deliveries come on, if known."""

    def webhook_adapter(self, fn: WebhookAdapter) -> WebhookAdapter:
        """Declare how the app's webhook deliveries become trigger events."""
        self.webhook = fn
        return fn

    def connection_check(self, fn: ConnectionCheck) -> ConnectionCheck:
        """Declare the cheap real call that proves a connection works: ``check(connection,
        name)`` returns a short note, or raises the app's typed error."""
        self.check = fn
        return fn

    def __repr__(self) -> str:
        return f"App({self.name!r}, triggers={len(self.triggers)}, actions={len(self.actions)})"

    def action(
        self, name: str, *, title: str, description: str | None = None, side_effects: bool = True
    ) -> Callable[[ActionFunction], ActionFunction]:
        """Declare an action; its input and output models come from the function's annotations."""

        def register(fn: ActionFunction) -> ActionFunction:
            if not inspect.iscoroutinefunction(fn):
                raise TypeError(f"action {self.name}.{name} must be an async function")
            hints = get_type_hints(fn)
            params = list(inspect.signature(fn).parameters)
            input_model, output_model = hints.get(params[0]), hints.get("return")
            for role, model in (("input", input_model), ("output", output_model)):
                if not (isinstance(model, type) and issubclass(model, BaseModel)):
                    raise TypeError(f"action {self.name}.{name}: {role} must be a pydantic model")
            assert input_model is not None and output_model is not None
            self._add(
                self.actions,
                Action(
                    app=self.name,
                    name=name,
                    title=title,
                    description=description or inspect.getdoc(fn) or "",
                    input_model=input_model,
                    output_model=output_model,
                    run=fn,
                    side_effects=side_effects,
                ),
            )
            return fn

        return register

    def trigger(
        self,
        name: str,
        *,
        title: str,
        payload: type[BaseModel],
        samples: list[dict[str, Any]],
        description: str = "",
        kind: TriggerKind = "webhook",
        options: type[BaseModel] | None = None,
        accepts: Callable[[dict[str, Any], dict[str, Any]], bool] | None = None,
    ) -> Trigger:
        """Declare a webhook or schedule trigger; every sample must fit the payload model.

        A schedule trigger's ``options`` model has the ``SCHEDULE_FIELDS``. Polling triggers
        are declared with :meth:`polling_trigger`.
        """
        if kind == "polling":
            raise TypeError(f"trigger {self.name}.{name}: declare it with app.polling_trigger")
        missing = [f for f in SCHEDULE_FIELDS if options is None or f not in options.model_fields]
        if kind == "schedule" and missing:
            raise TypeError(f"schedule trigger {self.name}.{name}: options need {missing}")
        trigger = Trigger(
            app=self.name,
            name=name,
            title=title,
            description=description,
            payload_model=payload,
            samples=self._samples(payload, samples),
            kind=kind,
            options_model=options,
            accepts=accepts,
        )
        self._add(self.triggers, trigger)
        return trigger

    def polling_trigger(
        self,
        name: str,
        *,
        title: str,
        payload: type[BaseModel],
        samples: list[dict[str, Any]],
        interval: timedelta,
        description: str | None = None,
    ) -> Callable[[PollFunction], PollFunction]:
        """Declare a polling trigger: the engine calls the function every ``interval`` (or the
        zap's ``options.interval``); its options model, a ``PollingOptions``, comes from the
        function's second parameter."""

        def register(fn: PollFunction) -> PollFunction:
            if not inspect.iscoroutinefunction(fn):
                raise TypeError(f"trigger {self.name}.{name} must poll with an async function")
            params = list(inspect.signature(fn).parameters)
            options = get_type_hints(fn).get(params[1]) if len(params) == 3 else None
            if not (isinstance(options, type) and issubclass(options, PollingOptions)):
                raise TypeError(
                    f"trigger {self.name}.{name}: poll(connection, options, cursor) with options "
                    "a PollingOptions model"
                )
            trigger = Trigger(
                app=self.name,
                name=name,
                title=title,
                description=description or inspect.getdoc(fn) or "",
                payload_model=payload,
                samples=self._samples(payload, samples),
                kind="polling",
                options_model=options,
                poll=fn,
                interval=interval,
            )
            self._add(self.triggers, trigger)
            return fn

        return register

    @staticmethod
    def _samples(payload: type[BaseModel], samples: list[dict[str, Any]]) -> tuple[dict, ...]:
        for sample in samples:
            payload.model_validate(sample)
        return tuple(samples)

    def _add(self, table: dict[str, Any], item: Action | Trigger) -> None:
        if item.name in table:
            raise ValueError(f"{self.name}: {item.name!r} is declared twice")
        table[item.name] = item
