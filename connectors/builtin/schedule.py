"""Schedule: a trigger that fires on a cron schedule, in a time zone.

Declared here like any trigger; ``zapflow serve`` fires it (``flows.intake.pollers``), so it
needs no Prefect scheduler.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from cronsim import CronSim, CronSimError
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from connectors.builtin._app import app
from connectors.builtin.formatter import TimeZone

CRON_HELP = (
    "five fields, minute hour day-of-month month day-of-week, e.g. '0 9 * * MON-FRI' "
    "(9:00 on weekdays) or '*/15 * * * *'; or @hourly, @daily, @weekly, @monthly, @yearly"
)
ALIASES = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}


def _check_cron(value: str) -> str:
    """The expression in its plain five-field form, or ValueError saying what is wrong."""
    text = ALIASES.get(value.strip().lower(), " ".join(value.split()))
    if len(text.split()) != 5:
        raise ValueError(f"{value!r} is not a cron expression: expected {CRON_HELP}")
    try:
        CronSim(text, datetime(2000, 1, 1))
    except CronSimError as exc:  # "Bad minute", "Bad day-of-month" …
        problem = str(exc).lower()
        raise ValueError(
            f"{value!r} is not a cron expression: {problem}; expected {CRON_HELP}"
        ) from None
    return text


Cron = Annotated[str, AfterValidator(_check_cron)]


class ScheduleOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cron: Cron = Field(
        description="When to fire: minute hour day-of-month month day-of-week, e.g. "
        "'0 9 * * MON-FRI'; or @hourly, @daily, @weekly, @monthly, @yearly",
        examples=["0 9 * * MON-FRI"],
    )
    timezone: TimeZone = Field(
        "UTC", description="The time zone the cron's times are in (IANA, e.g. Asia/Hong_Kong)"
    )


class ScheduleFired(BaseModel):
    scheduled_at: datetime = Field(
        description="The moment the schedule was due, in its time zone (ISO 8601)"
    )
    fired_at: datetime = Field(description="When zapflow fired it (UTC)")
    timezone: str = Field(description="The schedule's time zone")
    missed: bool = Field(
        description="True when the moment passed while zapflow was not running and fires late"
    )


app.trigger(
    "schedule",
    title="Schedule",
    description=(
        "Starts the zap at the times a cron expression gives, in a time zone. Each moment fires "
        "once, however many `zapflow serve` processes share the inbox. Moments missed while "
        "zapflow was not running fire once, the latest of them, when it starts again."
    ),
    payload=ScheduleFired,
    samples=[
        {
            "scheduled_at": "2026-11-25T09:00:00+08:00",
            "fired_at": "2026-11-25T01:00:00.012000+00:00",
            "timezone": "Asia/Hong_Kong",
            "missed": False,
        }
    ],
    kind="schedule",
    options=ScheduleOptions,
)
