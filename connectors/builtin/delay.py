"""Delay: wait for a duration, or until a moment, before the next step."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from connectors._contract import ActionContext
from connectors.builtin._app import app
from flows.errors import PermanentError
from flows.model import Duration

MAX_DELAY = timedelta(days=31)


class DelayInput(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    for_: Duration | None = Field(None, alias="for", description="How long to wait, e.g. 10m")
    until: AwareDatetime | None = Field(
        None, description="Wait until this moment (ISO 8601 with a time zone)"
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> DelayInput:
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
    """Waits for a duration (`for`) or until a moment (`until`), then lets the zap go on.

    Under `zapflow test` the step reports the wait without waiting.
    """
    now = datetime.now(UTC)
    if input.for_ is not None:
        seconds = input.for_.total_seconds()
    else:
        assert input.until is not None
        seconds = max(0.0, (input.until - now).total_seconds())
        if seconds > MAX_DELAY.total_seconds():
            raise PermanentError(f"`until` is more than {MAX_DELAY.days} days away")
    if not ctx.testing:
        await asyncio.sleep(seconds)
    return DelayOutput(waited_seconds=seconds, resumed_at=now + timedelta(seconds=seconds))
