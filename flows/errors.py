"""The engine's errors: zap files that cannot be loaded (``ZapValidationError`` carrying every
``Problem`` found: file, line, column, field path, what is allowed) and templates that cannot
be rendered; and ``is_retryable``, the engine's reading of any error. The errors apps raise,
and the root ``ZapError``, are the connector contract's (``connectors._errors``).
"""

from __future__ import annotations

from dataclasses import dataclass

from connectors._errors import PermanentError, RunParked, StepInputError, ZapError


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


def is_retryable(exc: BaseException) -> bool:
    """Whether a failed step may be tried again under its retry policy.

    Errors we know to be permanent (bad input, a refused request, rejected credentials) never
    are; anything else, including timeouts and unexpected crashes, is treated as transient.
    """
    return not isinstance(
        exc, PermanentError | StepInputError | TemplateError | ZapValidationError | RunParked
    )
