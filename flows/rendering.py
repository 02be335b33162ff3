"""Where a zap run's templates render: on the event loop while quick, else in a render process.

Nearly every template renders in microseconds, so a run renders on ``serve``'s event loop first,
for at most ``INLINE_SECONDS``. A render still going then stops (``SliceSpent``) and is done
again, from the start, in a render process (templates have no side effects, so a second render
gives the same value) under the rest of its budget. A process and not a thread: a thread
rendering holds Python's GIL, and every other zap's run — each hop between the event loop and
the database's or Prefect's threads needs it back — would crawl (a plain zap's event took 1.2 s
instead of 0.02 s beside two runaway renders on threads).

At most ``RENDER_PROCESSES`` render processes (``python -m flows.rendering``) run, started when
first needed and kept; they run at a lower priority, so the zaps keep their cores, and with a
memory limit. One that dies, or whose render is abandoned (its step timed out), is replaced:
only that render fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import struct
import sys
import time
from typing import Any, BinaryIO

from flows import template_budget as budget
from flows.errors import TemplateError
from flows.templating import _render, condition_template

RENDER_PROCESSES = 2
NICENESS = 10
MEMORY_LIMIT = 2 * 1024**3
"""Address space a render process may take (bytes): a template that slips past the size checks
fails with MemoryError instead of swapping the machine."""
_HEADER = struct.Struct("!Q")


class _Process:
    """One render process, spoken to over its stdin and stdout: a length-prefixed pickle each
    way, one render at a time."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls) -> _Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "flows.rendering",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        return cls(proc)

    async def call(self, request: bytes) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(_HEADER.pack(len(request)) + request)
        await self.proc.stdin.drain()
        (size,) = _HEADER.unpack(await self.proc.stdout.readexactly(_HEADER.size))
        return pickle.loads(await self.proc.stdout.readexactly(size))

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()


class _Processes:
    def __init__(self) -> None:
        self.idle: list[_Process] = []
        self.slots: asyncio.Semaphore | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def _for_this_loop(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self.loop is not loop or self.slots is None:  # a new event loop (tests, CLI calls)
            for process in self.idle:
                process.kill()
            self.idle, self.loop = [], loop
            self.slots = asyncio.Semaphore(RENDER_PROCESSES)
        return self.slots

    async def render(self, request: bytes) -> Any:
        async with self._for_this_loop():
            process = self.idle.pop() if self.idle else await _Process.start()
            try:
                reply = await process.call(request)
            except BaseException:  # died, or abandoned mid-render: its reply would be stale
                process.kill()
                raise
            self.idle.append(process)
            return reply

    def close(self) -> None:
        for process in self.idle:
            process.kill()
        self.idle = []


_processes = _Processes()


def shutdown() -> None:
    """Stop the idle render processes (they also end when serve does: their stdin closes)."""
    _processes.close()


async def render(value: Any, context: dict[str, Any], path: str = "") -> Any:
    """Render every template in ``value`` as ``templating.render_value`` does, holding no other
    zap back: on the event loop up to ``INLINE_SECONDS``, then in a render process."""
    started = time.monotonic()
    try:
        with budget.spending(inline=True):
            return _render(value, context, path)
    except budget.SliceSpent:
        pass
    left = max(0.0, budget.RENDER_SECONDS - (time.monotonic() - started))
    try:
        request = pickle.dumps((value, context, path, left, budget.step_deadline_now()))
    except Exception as exc:
        raise TemplateError(f"{path}: the step's data cannot be rendered apart: {exc}") from None
    try:
        ok, result = await _processes.render(request)
    except (OSError, EOFError, asyncio.IncompleteReadError):
        raise TemplateError(
            f"{path}: the template's render process died (out of memory?)"
        ) from None
    if not ok:
        raise TemplateError(result)
    return result


async def condition_holds(condition: str, context: dict[str, Any], path: str) -> bool:
    """Whether a condition (a filter, a step's or a path's ``when``) holds (see ``render``)."""
    return bool(await render(condition_template(condition), context, path))


# --------------------------------------------------------------------------- the render process


def _answer(request: bytes) -> bytes:
    value, context, path, seconds, step = pickle.loads(request)
    try:
        with budget.under_step_deadline(step), budget.spending(seconds):
            result = _render(value, context, path)
        return pickle.dumps((True, result))
    except TemplateError as exc:
        return pickle.dumps((False, str(exc)))
    except Exception as exc:  # the value cannot be sent back, or a bug
        return pickle.dumps((False, f"{path}: {type(exc).__name__}: {exc}"))


def _serve(stdin: BinaryIO, stdout: BinaryIO) -> None:  # pragma: no cover - a child process
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    while header := stdin.read(_HEADER.size):
        (size,) = _HEADER.unpack(header)
        reply = _answer(stdin.read(size))
        stdout.write(_HEADER.pack(len(reply)) + reply)
        stdout.flush()


if __name__ == "__main__":  # pragma: no cover - python -m flows.rendering, started by render()
    _serve(sys.stdin.buffer, sys.stdout.buffer)
