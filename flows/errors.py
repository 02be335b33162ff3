"""The one error hierarchy of zapflow.

``ZapError`` is the root. Zap files that cannot be loaded raise ``ZapValidationError`` carrying
every ``Problem`` found (file, line, column, field path, what is allowed). Connector calls raise a
``ConnectorError`` whose class tells the engine what to do next: retry (``RetryableError``),
stop at once (``PermanentError``), or stop and ask the user to re-enter credentials
(``AuthError``). Messages never carry secrets: connectors build them from the app's reply.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


class ZapError(Exception):
    """Base of every error zapflow raises on purpose."""


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with a zap file, located as precisely as the file allows."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ZapValidationError(ZapError):
    """A zap file (or several) is not valid; ``problems`` lists everything found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class TemplateError(ZapError):
    """A template could not be rendered (missing value, refused by the sandbox …)."""


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


def is_retryable(exc: BaseException) -> bool:
    """Whether a failed step may be tried again under its retry policy.

    Errors we know to be permanent (bad input, a refused request, rejected credentials) never
    are; anything else, including timeouts and unexpected crashes, is treated as transient.
    """
    return not isinstance(
        exc, PermanentError | StepInputError | TemplateError | ZapValidationError | RunParked
    )
