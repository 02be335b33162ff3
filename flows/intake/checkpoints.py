"""Step checkpoints: each step's outcome committed to the inbox before the run's next step.

A zap run that is resumed — its dispatcher crashed, or was stopped mid-run, and the run is taken
over here or by another dispatcher sharing the inbox — starts after its last completed step,
reading the earlier outputs from its checkpoints (``flows.runtime.Journal``): a completed step
never runs again. The step in flight at a crash has no checkpoint and runs again, with the same
idempotency key: that one step is at-least-once.

A step's outcome is noted when it ends and committed before the run's next step acts, as a group
commit: one writer takes whatever outcomes were noted while the previous commit was being made
and commits them in one transaction (on the dispatcher's inbox thread,
``flows.intake.threaded``). A run's last step needs no checkpoint of its own: the run's end,
written to the ledger, says it completed (until then, it is the step in flight) — so a one-step
zap costs no extra commit. Likewise a run that parks in a delay hands its last outcomes (the
waiting step's among them) to the ledger write that parks it: one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from flows.intake.db import StepOutcome
from flows.intake.inbox import Inbox
from flows.runtime import Journal

log = logging.getLogger("zapflow.checkpoints")
TRIES = 3


class Checkpoints:
    """The dispatcher's step checkpoints: ``journal(event, zap, done)`` for a run."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox
        self._queue: dict[asyncio.Future[None], StepOutcome] = {}
        self._wanted = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self.commits = 0
        self.saved = 0

    def journal(
        self, event_id: str, zap: str, done: dict[str, tuple[str, Any]] | None = None
    ) -> Journal:
        mine: list[asyncio.Future[None]] = []
        loop = asyncio.get_running_loop()

        def save(step: str, status: str, output: Any) -> None:
            future: asyncio.Future[None] = loop.create_future()
            self._queue[future] = StepOutcome(event_id, zap, step, status, output)
            mine.append(future)

        async def before_step() -> None:
            waiting = [f for f in mine if not f.done()]
            if waiting:
                self._start()
                self._wanted.set()
                await asyncio.gather(*waiting)
            mine.clear()

        def end() -> None:
            """The run is over: its last outcomes go with the run's end in the ledger."""
            for future in mine:
                self._queue.pop(future, None)
                if not future.done():
                    future.set_result(None)
            mine.clear()

        def hand_over() -> list[StepOutcome]:
            """The run parks: its outcomes not committed yet go with its ledger row, in the
            same transaction (parking costs no commit of its own)."""
            taken = [o for o in (self._queue.pop(f, None) for f in mine) if o is not None]
            end()
            return taken

        return Journal(
            done=done or {}, save=save, before_step=before_step, end=end, hand_over=hand_over
        )

    def _start(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_loop(), name="step checkpoints")

    async def _write_loop(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            batch, self._queue = self._queue, {}
            if not batch:
                continue
            error: Exception | None = None
            for attempt in range(TRIES):
                try:
                    await self.inbox.save_steps(list(batch.values()))
                    error = None
                    break
                except Exception as exc:
                    error = exc
                    await asyncio.sleep(0.2 * (attempt + 1))
            if error is not None:
                log.warning(
                    "could not checkpoint %d steps (%s: %s); a crash now would run them again",
                    len(batch),
                    type(error).__name__,
                    error,
                )
            else:
                self.commits += 1
                self.saved += len(batch)
            for future in batch:
                if not future.done():
                    future.set_result(None)

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.cancel()
            with contextlib.suppress(BaseException):
                await writer
        for future in self._queue:
            if not future.done():
                future.set_result(None)
        self._queue = {}
