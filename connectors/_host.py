"""What the engine offers the command groups apps add to ``zapflow`` (entry points
``zapflow.cli``): the triggers of a folder's zaps, an app connection's hook URL, and running
work with a stored connection — so an app's commands never import the engine.

``zapflow``'s command line installs the engine's host before it mounts the apps' groups.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class ZapTrigger:
    """A zap of the folder, by its trigger."""

    zap: str
    app: str
    event: str
    connection: str | None
    enabled: bool


class HostProblem(Exception):
    """What the user must fix (invalid zaps, an inbox that cannot be opened, a connection that
    cannot be found); the message says what."""


class Host(Protocol):
    def zap_triggers(self, folder: Path) -> list[ZapTrigger]:
        """The triggers of the zaps under ``folder``; HostProblem listing the invalid ones."""
        ...

    def hook_base(self, public_url: str, app: str, connection: str, inbox: str | None) -> str:
        """An app connection's hook URL without its channel, as ``zapflow serve`` at
        ``public_url`` answers it (its token from the inbox, created on first use)."""
        ...

    def run_with_connection(self, app: str, name: str, work: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``work(connection)`` with the app's connection ``name`` (from the environment
        or stored with the run history)."""
        ...


_host: Host | None = None


def install(host: Host) -> None:
    global _host
    _host = host


def host() -> Host:
    if _host is None:
        raise RuntimeError("zapflow's engine is not loaded: run this through the zapflow command")
    return _host
