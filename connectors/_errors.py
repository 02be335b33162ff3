"""The errors apps raise, and the root of every error zapflow raises on purpose.

``ZapError`` is the root. An app's action raises a ``ConnectorError`` whose class tells the
engine what to do next: retry (``RetryableError``), stop at once (``PermanentError``), or stop
and ask the user to re-enter credentials (``AuthError``). ``StepInputError``: the step's input
does not fit the action; ``RunParked``: not a failure, a delay ends the run's turn. Messages
never carry secrets: apps build them from the app's reply. (The engine's own errors — zap files
that cannot be loaded, templates that cannot be rendered — are in ``flows.errors``.)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any


class ZapError(Exception):
    """Base of every error zapflow raises on purpose."""


class StepInputError(ZapError):
    """A step's rendered input does not fit its action's input model; retrying cannot help."""


class RunParked(ZapError):
    """Not a failure: a step (a delay) ends the run's turn here. The run is stored as waiting
    and resumed at ``resume_at`` after this step, whatever happens to the process meanwhile;
    nothing is held in memory while it waits; ``output`` is the step's output once it is over.
    Raised only where the run can be parked (``ActionContext.can_park``)."""

    def __init__(
        self, resume_at: datetime, *, since: datetime, output: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"waits until {resume_at.isoformat(timespec='seconds')}")
        self.resume_at, self.since = resume_at, since
        self.checkpoint: dict[str, Any] = {
            "resume_at": resume_at.isoformat(),
            "since": since.isoformat(),
            "output": output,
        }
        """What the step's checkpoint keeps while the run waits (the task run adds itself)."""


class ConnectorError(ZapError):
    """An app call failed. Subclasses say whether retrying can help."""


class RetryableError(ConnectorError):
    """A transient failure (timeout, reset, 5xx, rate limit): the step's retry policy applies."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(ConnectorError):
    """The app refused the request for good (bad parameter, not found …): fail without retrying."""


class AuthError(PermanentError):
    """The app rejected the connection's credentials; the user must re-enter them."""
