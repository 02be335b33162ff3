"""An inbox on an event loop of its own thread, for a process whose main loop is busy.

The dispatcher's loop runs dozens of zaps at once. A write transaction driven from that loop
holds the database's write lock from its first statement to its COMMIT, and between the two
(each an ``await``) the loop may run every ready zap first: under a burst the lock was held for
seconds, and the receiver's acknowledgements waited for it. Here the same ``Inbox`` runs on a
loop that does nothing else, so a transaction holds the lock only while its SQL runs. Its
database connections belong to that loop; callers on any loop await its methods as usual.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from typing import Any

from flows.intake.inbox import Inbox


class ThreadedInbox:
    """``Inbox``'s coroutine methods, run on the inbox's own thread; other attributes as is."""

    def __init__(self, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        self._loop, self._thread = loop, thread
        self._inbox: Inbox | None = None

    @classmethod
    async def open(cls, url: str | None = None, **options: Any) -> ThreadedInbox:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="zapflow-inbox", daemon=True)
        thread.start()
        threaded = cls(loop, thread)
        try:
            threaded._inbox = await threaded._run(Inbox.open(url, **options))
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            raise
        return threaded

    async def _run(self, coro: Any) -> Any:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inbox, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        @functools.wraps(attr)
        async def on_inbox_thread(*args: Any, **kwargs: Any) -> Any:
            return await self._run(attr(*args, **kwargs))

        return on_inbox_thread

    async def close(self) -> None:
        try:
            if self._inbox is not None:
                await self._run(self._inbox.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            await asyncio.to_thread(self._thread.join)
            self._loop.close()
