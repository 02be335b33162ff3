"""The CINNOX sandbox: a local server that speaks CINNOX's API (``wire.py``) with demo data, so
zaps can be tried without a CINNOX account. ``zapflow sandbox`` runs it; see README.md.

In Python (tests, scripts)::

    from connectors.cinnox.sandbox import run_in_thread

    with run_in_thread() as (base_url, control):
        account = control.accounts()[0]  # appId, appToken, baseUrl
        control.emit("missed_enquiry")

Imports here are lazy so that ``zapflow``'s command line stays quick to start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from connectors.cinnox.sandbox.app import create_app
    from connectors.cinnox.sandbox.control import SandboxControl, SandboxError, SandboxNotRunning
    from connectors.cinnox.sandbox.runner import run_in_thread, serve_in_thread
    from connectors.cinnox.sandbox.state import SandboxConfig

_EXPORTS = {
    "SandboxConfig": "state",
    "create_app": "app",
    "SandboxControl": "control",
    "SandboxError": "control",
    "SandboxNotRunning": "control",
    "run_in_thread": "runner",
    "serve_in_thread": "runner",
}
__all__ = [
    "SandboxConfig",
    "SandboxControl",
    "SandboxError",
    "SandboxNotRunning",
    "create_app",
    "run_in_thread",
    "serve_in_thread",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
