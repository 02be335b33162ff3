"""`zapflow serve` in a subprocess, as a user runs it, for the tests that need the process."""

from __future__ import annotations

import asyncio
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from procs import free_port  # bench's (conftest puts bench/ on the path)


class Serve:
    """`zapflow serve` in a subprocess, its output read line by line."""

    def __init__(
        self,
        folder: Path,
        home: Path,
        env: dict[str, str],
        port: int | None = None,
        extra: list[str] | None = None,
    ) -> None:
        """``extra``: more options, e.g. ``["--role", "worker", "--inbox", url]``."""
        self.port = port or free_port()
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from flows.cli import main; main()",
                "serve",
                str(folder),
                "--port",
                str(self.port),
                "--live-idle",
                "1",
                *(extra or []),
            ],
            env={**os.environ, **env, "ZAPFLOW_HOME": str(home), "COLUMNS": "250"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip())

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        for line in self.seen:
            if found := re.search(pattern, line):
                return found
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.seen.append(line)
            if found := re.search(pattern, line):
                return found
        raise AssertionError(f"no line matching {pattern!r}; output:\n" + "\n".join(self.seen))

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def output(self) -> str:
        """Everything it printed so far."""
        while not self.lines.empty():
            self.seen.append(self.lines.get_nowait())
        return "\n".join(self.seen)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when the machine or the OOM killer stops it."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)


def ledger(home: Path, zap_id: str, limit: int = 100_000) -> list[Any]:
    """The run ledger's rows for a zap, from the inbox under `zapflow serve`'s state folder."""
    from flows.intake.inbox import Inbox

    async def read() -> list[Any]:
        inbox = await Inbox.open(f"sqlite:///{home / 'inbox.db'}")
        try:
            return await inbox.recent_runs(limit=limit, zap=zap_id)
        finally:
            await inbox.close()

    return asyncio.run(read())
