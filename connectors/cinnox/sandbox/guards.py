"""What stands before the API's handlers, in memory: injected faults and the rate limit."""

from __future__ import annotations

import math
import time
from collections import defaultdict, deque
from dataclasses import asdict, dataclass
from fnmatch import fnmatchcase
from typing import Any

from connectors.cinnox.sandbox.common import ControlError
from connectors.cinnox.wire import Code

DEFAULT_MESSAGES: dict[int, str] = {
    Code.TAG_NOT_FOUND: "tag not found",
    Code.DESTINATION_NOT_FOUND: "destination not found",
    Code.METHOD_NOT_FOUND: "method not found",
    Code.PARAMETER_ERROR: "parameter error",
    Code.BAD_RESPONSE_FROM_SERVICE: "bad response from service",
    Code.TOO_MANY_REQUESTS: "too many requests",
    Code.UNAUTHORIZED: "unauthorized",
}


@dataclass
class Fault:
    """Answer the next ``times`` API requests whose path matches ``path`` with an error code,
    an HTTP status, and/or after a delay; or let them succeed with their reply's keys changed
    (``changes``: key → new value, ``None`` removes the key), as a CINNOX that answers in a
    shape the docs do not show would.

    ``path`` is a glob matched against the path after ``/v1/api/apps/{app_id}`` (``/send_sms``,
    ``/management/*``, ``*``) or against the whole path.
    """

    path: str
    code: int | None = None
    status: int | None = None
    delay: float = 0.0
    times: int = 1
    message: str | None = None
    changes: dict[str, Any] | None = None
    id: int = 0

    def matches(self, relative: str, full: str) -> bool:
        return fnmatchcase(relative, self.path) or fnmatchcase(full, self.path)

    def change(self, reply: dict[str, Any]) -> dict[str, Any]:
        """A successful reply as this fault reshapes it."""
        changed = dict(reply)
        for key, value in (self.changes or {}).items():
            if value is None:
                changed.pop(key, None)
            else:
                changed[key] = value
        return changed

    def reply(self) -> tuple[int, dict[str, Any]] | None:
        """The HTTP status and body to answer with, or None for a delay-only fault."""
        if self.code is None and self.status is None:
            return None
        code, status = self.code, self.status
        if code is None:
            failed = status is not None and status >= 500
            code = Code.BAD_RESPONSE_FROM_SERVICE if failed else Code.PARAMETER_ERROR
        if status is None:
            statuses: dict[int, int] = {Code.TOO_MANY_REQUESTS: 429, Code.UNAUTHORIZED: 401}
            status = statuses.get(code, 400)
        message = self.message or DEFAULT_MESSAGES.get(code, "injected fault")
        return status, {"code": int(code), "message": message}


class Faults:
    def __init__(self) -> None:
        self.active: list[Fault] = []
        self.serial = 0

    def add(
        self,
        path: str,
        *,
        code: int | None = None,
        status: int | None = None,
        delay: float | None = None,
        times: int = 1,
        message: str | None = None,
        changes: dict[str, Any] | None = None,
    ) -> Fault:
        if not path:
            raise ControlError("a fault needs a path, e.g. /send_sms or *")
        if code is None and status is None and not delay and not changes:
            raise ControlError("a fault needs a code, a status, a delay or reply changes")
        if changes is not None and not isinstance(changes, dict):
            raise ControlError("changes must be an object: reply key → new value (null removes)")
        if changes and (code is not None or status is not None):
            raise ControlError("a fault either fails the request or changes its reply, not both")
        if status is not None and not 400 <= status <= 599:
            raise ControlError("status must be an HTTP error status (400-599)")
        if delay is not None and not 0 <= delay <= 600:
            raise ControlError("delay must be between 0 and 600 seconds")
        if times < 1:
            raise ControlError("times must be at least 1")
        self.serial += 1
        fault = Fault(
            path=path if path.startswith(("/", "*")) else "/" + path,
            code=code,
            status=status,
            delay=delay or 0.0,
            times=times,
            message=message,
            changes=changes or None,
            id=self.serial,
        )
        self.active.append(fault)
        return fault

    def take(self, relative: str, full: str) -> Fault | None:
        """The first fault matching the path, counting this request against it."""
        for fault in self.active:
            if fault.matches(relative, full):
                fault.times -= 1
                if fault.times <= 0:
                    self.active.remove(fault)
                return fault
        return None

    def list(self) -> list[dict[str, Any]]:
        return [asdict(f) for f in self.active]

    def clear(self) -> None:
        self.active.clear()


class RateLimiter:
    """At most ``limit`` requests per account in any sliding ``window`` seconds."""

    def __init__(self, limit: int, window: float = 60.0) -> None:
        self.limit, self.window = limit, window
        self.seen: dict[str, deque[float]] = defaultdict(deque)

    def hit(self, key: str) -> float | None:
        """Count a request; None if allowed, else the seconds until one would be."""
        now = time.monotonic()
        seen = self.seen[key]
        while seen and now - seen[0] >= self.window:
            seen.popleft()
        if len(seen) >= self.limit:
            return max(0.0, self.window - (now - seen[0]))
        seen.append(now)
        return None

    @staticmethod
    def retry_after(wait: float) -> str:
        return str(max(1, math.ceil(wait)))

    def clear(self) -> None:
        self.seen.clear()
