"""What one template render may spend: time, loop iterations, and the size of any value it builds.

Jinja's sandbox stops templates reaching Python internals, not templates that never end or build
gigabytes. zapflow renders every template under a budget, checked as it runs:

- ``RENDER_SECONDS`` of time and ``MAX_STEPS`` loop iterations and calls, counted at every loop
  iteration (each ``{% for %}`` iterates through ``each``), call, filter and operator;
- ``MAX_SIZE`` characters (or items) for any string or list it builds, checked *before* building
  where the size is known in advance (``'x' * n``, ``a + b``, format widths, ``center``,
  ``indent``, ``join``, ``replace``, ``lipsum``) and after every call otherwise, and for every
  value stored in a ``namespace`` (how a loop accumulates);
- ``MAX_INT_BITS`` bits for an integer a power or product makes.

A template over budget raises ``OverBudget`` (a ``SecurityError``): its step fails at once, not
retried, with a message naming the limit. A step's render also ends at the step's ``timeout``
(``step_deadline``) when that comes first.

A run renders on the event loop for at most ``INLINE_SECONDS``; a render still going then stops
(``SliceSpent``) and is done again in a render process (``flows.rendering``), so one slow
template never holds other zaps back.

``validate`` refuses the constant expressions it can prove over budget (``'x' * 10**9``,
``10 ** 100000``) before anything runs.
"""

from __future__ import annotations

import operator
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from jinja2.exceptions import SecurityError

RENDER_SECONDS = 0.5
INLINE_SECONDS = 0.02
MAX_STEPS = 1_000_000
MAX_SIZE = 1_000_000
MAX_INT_BITS = 100_000
MAX_POWER = 1_000


class OverBudget(SecurityError):
    """A template went over one of its limits; the message names which."""


class SliceSpent(BaseException):
    """A render on the event loop used its slice: it is to be rendered again off the loop.

    A ``BaseException``, so that no ``except Exception`` in Jinja or a filter swallows it."""


@dataclass
class Budget:
    deadline: float
    why: str
    steps: int = 0
    slice_end: float | None = None

    def tick(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise OverBudget(f"the template did more than {MAX_STEPS:,} loop iterations and calls")
        if self.steps % 64 == 0:
            moment = time.monotonic()
            if self.slice_end is not None and moment > self.slice_end:
                raise SliceSpent
            if moment > self.deadline:
                raise OverBudget(self.why)


_current: ContextVar[Budget | None] = ContextVar("zapflow_template_budget", default=None)
_step_deadline: ContextVar[tuple[float, float] | None] = ContextVar(
    "zapflow_step_deadline", default=None
)


@contextmanager
def step_deadline(seconds: float | None) -> Iterator[None]:
    """Renders inside end by the step's timeout (``seconds`` from now) if that comes first."""
    if seconds is None:
        yield
        return
    token = _step_deadline.set((time.monotonic() + seconds, seconds))
    try:
        yield
    finally:
        _step_deadline.reset(token)


def step_deadline_now() -> tuple[float, float] | None:
    """The step's deadline (monotonic time, which every process on the machine shares) and
    timeout, to hand to a render process."""
    return _step_deadline.get()


@contextmanager
def under_step_deadline(deadline: tuple[float, float] | None) -> Iterator[None]:
    """In a render process: the deadline ``step_deadline_now`` gave."""
    token = _step_deadline.set(deadline)
    try:
        yield
    finally:
        _step_deadline.reset(token)


@contextmanager
def spending(seconds: float = RENDER_SECONDS, *, inline: bool = False) -> Iterator[Budget]:
    """Render under a fresh budget (nested renders share the outer one); ``inline``: on the
    event loop, so a render past ``INLINE_SECONDS`` raises ``SliceSpent``."""
    outer = _current.get()
    if outer is not None:
        yield outer
        return
    started = time.monotonic()
    deadline, why = started + seconds, f"the template ran longer than {RENDER_SECONDS} s"
    step = _step_deadline.get()
    if step is not None and step[0] < deadline:
        deadline, why = step[0], f"the template ran past the step's timeout ({step[1]:g} s)"
    budget = Budget(deadline, why, slice_end=started + INLINE_SECONDS if inline else None)
    token = _current.set(budget)
    try:
        yield budget
    finally:
        _current.reset(token)


def tick() -> None:
    budget = _current.get()
    if budget is not None:
        budget.tick()


def each(iterable: Any) -> Iterator[Any]:
    """What every ``{% for %}`` loop iterates through: the loop's items, each one counted."""
    for item in iterable:
        tick()
        yield item


# --------------------------------------------------------------------------- sizes


def size_of(value: Any) -> int:
    if isinstance(value, str | list | tuple | dict | set | frozenset | bytes):
        return len(value)
    return 0


def check_size(size: int, what: str) -> None:
    if size > MAX_SIZE:
        raise OverBudget(f"{what} would be {size:,} long (the limit is {MAX_SIZE:,})")


def checked(value: Any, what: str = "a value") -> Any:
    check_size(size_of(value), what)
    if isinstance(value, int) and not isinstance(value, bool):
        _check_bits(value.bit_length(), what)
    return value


def _check_bits(bits: int, what: str) -> None:
    if bits > MAX_INT_BITS:
        raise OverBudget(f"{what} would be a {bits:,}-bit number (the limit is {MAX_INT_BITS:,})")


_SEQUENCE = (str, list, tuple)


def binop(op: str, left: Any, right: Any) -> Any:
    """``left op right`` for the operators the sandbox intercepts, refusing huge results first."""
    tick()
    if op == "**":
        if isinstance(right, int | float) and abs(right) > MAX_POWER:
            raise OverBudget(f"exponent {right} is too large (the limit is {MAX_POWER})")
        if isinstance(left, int) and isinstance(right, int) and right > 0:
            _check_bits(max(1, abs(left).bit_length()) * right, "a power")
        return operator.pow(left, right)
    if op == "*":
        if isinstance(left, _SEQUENCE) and isinstance(right, int):
            check_size(len(left) * right, "a repeated sequence")
        elif isinstance(right, _SEQUENCE) and isinstance(left, int):
            check_size(len(right) * left, "a repeated sequence")
        elif isinstance(left, int) and isinstance(right, int):
            _check_bits(left.bit_length() + right.bit_length(), "a product")
        return operator.mul(left, right)
    if op == "+":
        if isinstance(left, _SEQUENCE) and isinstance(right, _SEQUENCE):
            check_size(len(left) + len(right), "a joined sequence")
        return operator.add(left, right)
    if op == "%":
        if isinstance(left, str):
            check_widths(left)
        return checked(operator.mod(left, right), "a formatted string")
    raise SecurityError(f"operator {op} is not budgeted")  # pragma: no cover - a bug


_NUMBER = re.compile(r"\d+")
_PRINTF = re.compile(r"%[-#0 +]*(\d*|\*)(?:\.(\d*|\*))?")
_BRACES = re.compile(r"\{[^{}]*\}")


def check_widths(text: str, braces: bool = False) -> None:
    """Refuse a format string whose widths or precisions would build a huge string."""
    specs = (
        [m.group(0) for m in _BRACES.finditer(text)]
        if braces
        else [m.group(0) for m in _PRINTF.finditer(text)]
    )
    for spec in specs:
        for number in _NUMBER.findall(spec):
            check_size(int(number), "a format width")


# --------------------------------------------------------------------------- filters, globals


def _center(original: Callable[..., Any]) -> Callable[..., Any]:
    def center(value: Any, width: int = 80) -> Any:
        if isinstance(width, int | float):
            check_size(int(width), "a centered string")
        return original(value, width)

    return center


def _indent(original: Callable[..., Any]) -> Callable[..., Any]:
    def indent(s: Any, width: Any = 4, first: bool = False, blank: bool = False) -> Any:
        text = str(s)
        lines = text.count("\n") + 1
        pad = int(width) if isinstance(width, int | float) else len(str(width))
        check_size(len(text) + pad * lines, "an indented string")
        return original(s, width, first, blank)

    return indent


def _join(original: Callable[..., Any]) -> Callable[..., Any]:
    def join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> Any:
        items = list(each(value))
        if attribute is None:
            estimate = sum(len(str(i)) for i in items) + len(str(d)) * max(0, len(items) - 1)
            check_size(estimate, "a joined string")
        return checked(original(eval_ctx, items, d, attribute), "a joined string")

    join.jinja_pass_arg = original.jinja_pass_arg  # type: ignore[attr-defined]
    return join


def _replace(original: Callable[..., Any]) -> Callable[..., Any]:
    def replace(eval_ctx: Any, s: Any, old: Any, new: Any, count: Any = None) -> Any:
        text, old_s, new_s = str(s), str(old), str(new)
        hits = text.count(old_s) if old_s else len(text) + 1
        if count is not None and isinstance(count, int):
            hits = min(hits, count)
        check_size(len(text) + hits * max(0, len(new_s) - len(old_s)), "a replaced string")
        return original(eval_ctx, s, old, new, count)

    replace.jinja_pass_arg = original.jinja_pass_arg  # type: ignore[attr-defined]
    return replace


def _format(original: Callable[..., Any]) -> Callable[..., Any]:
    def format_(value: Any, *args: Any, **kwargs: Any) -> Any:
        check_widths(str(value))
        return checked(original(value, *args, **kwargs), "a formatted string")

    return format_


def _lipsum(original: Callable[..., Any]) -> Callable[..., Any]:
    def lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> Any:  # noqa: A002
        if isinstance(n, int) and isinstance(max, int):
            check_size(n * max * 8, "lorem ipsum text")
        return original(n, html, min, max)

    return lipsum


def _counted(original: Callable[..., Any]) -> Callable[..., Any]:
    def counted(*args: Any, **kwargs: Any) -> Any:
        tick()
        return checked(original(*args, **kwargs), "a filter's result")

    for attr in ("jinja_pass_arg",):
        if hasattr(original, attr):
            setattr(counted, attr, getattr(original, attr))
    return counted


SIZED_FILTERS: dict[str, Callable[[Callable[..., Any]], Callable[..., Any]]] = {
    "center": _center,
    "indent": _indent,
    "join": _join,
    "replace": _replace,
    "format": _format,
}


def budget_filters(filters: dict[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    """Every filter counted and its result checked; the ones that can build huge strings from
    small arguments refuse them first."""
    return {
        name: _counted(SIZED_FILTERS[name](f) if name in SIZED_FILTERS else f)
        for name, f in filters.items()
    }


def budget_lipsum(original: Callable[..., Any]) -> Callable[..., Any]:
    return _lipsum(original)
