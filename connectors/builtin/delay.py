"""Delay: wait for a duration, or until a moment, before the next step.

Under ``zapflow serve`` a wait of PARK_FROM seconds or more parks the run: the step ends the
run's turn (``RunParked``), the run is stored as waiting with its resume time, its concurrency
slot is free at once, and it resumes after this step when due — after restarts too, on any
serve sharing the inbox. Elsewhere (``zapflow run``, a deployment) the step sleeps.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from connectors._contract import ActionContext
from connectors._errors import PermanentError, RunParked
from connectors._units import Duration
from connectors.builtin._app import app

MAX_DELAY = timedelta(days=31)
PARK_FROM = 0.5
"""Waits this long or longer park the run (seconds); shorter ones sleep in place."""


class DelayInput(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    for_: Duration | None = Field(None, alias="for", description="How long to wait, e.g. 10m")
    until: AwareDatetime | None = Field(
        None, description="Wait until this moment (ISO 8601 with a time zone)"
    )
    queue: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description=(
            "Delay after queue: runs with the same queue name (in any zap) go on one at a "
            "time, `for` apart; a run that finds the queue idle goes on at once"
        ),
        examples=["sms-out"],
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> DelayInput:
        if self.queue is not None and self.for_ is None:
            raise ValueError("a `queue` needs `for`: the spacing between two runs of the queue")
        if (self.for_ is None) == (self.until is None):
            raise ValueError("give exactly one of `for` (a duration) or `until` (a moment)")
        if self.for_ is not None and not timedelta(0) <= self.for_ <= MAX_DELAY:
            raise ValueError(f"`for` must be between 0 and {MAX_DELAY.days} days")
        return self


class DelayOutput(BaseModel):
    waited_seconds: float = Field(description="How long the step waited")
    resumed_at: datetime = Field(description="When the zap went on (UTC)")


@app.action("delay", title="Delay", side_effects=False)
async def delay(input: DelayInput, ctx: ActionContext) -> DelayOutput:
    """Waits for a duration (`for`) or until a moment (`until`), at most 31 days, then lets the
    zap go on.

    Under `zapflow serve` a wait of half a second or more parks the run: it is stored as waiting
    (`zapflow runs --waiting`), its concurrency slot is free, and it goes on after this step
    when due, after restarts too (`zapflow resume` / `zapflow cancel` act on it). Under
    `zapflow test` the step reports the wait without waiting.
    """
    now = datetime.now(UTC)
    if input.queue is not None and input.for_ is not None:
        seconds = input.for_.total_seconds()
        if not ctx.testing:  # the run's place in the queue: `for` after the one before it
            slot = await _queue_slot(ctx, input.queue, input.for_, now)
            seconds = (slot - now).total_seconds()
    elif input.for_ is not None:
        seconds = input.for_.total_seconds()
    else:
        assert input.until is not None
        seconds = max(0.0, (input.until - now).total_seconds())
        if seconds > MAX_DELAY.total_seconds():
            raise PermanentError(f"`until` is more than {MAX_DELAY.days} days away")
    output = DelayOutput(waited_seconds=seconds, resumed_at=now + timedelta(seconds=seconds))
    if ctx.testing:
        pass
    elif ctx.can_park and seconds >= PARK_FROM:
        raise RunParked(output.resumed_at, since=now, output=output.model_dump(mode="json"))
    else:
        await asyncio.sleep(seconds)
    return output


QUEUES = "builtin.delay.queue"
"""The storage namespace of the queues' last slots (one key per queue name)."""


async def _queue_slot(ctx: ActionContext, name: str, spacing: timedelta, now: datetime) -> datetime:
    """Take the queue's next slot, atomically across every serve sharing the database: now if
    the queue has been idle for ``spacing``, else ``spacing`` after the last slot taken."""

    def take(current: object) -> tuple[str, datetime]:
        last = datetime.fromisoformat(current) if isinstance(current, str) else None
        slot = max(now, last + spacing) if last is not None else now
        if slot - now > MAX_DELAY:
            raise PermanentError(
                f"queue {name!r} is full: its next slot is more than {MAX_DELAY.days} days away"
            )
        return slot.isoformat(), slot

    store = await ctx.storage()
    return await store.change(QUEUES, name, take)
