"""The engine's side of ``connectors._host``: what the apps' command groups may ask of it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from connectors import registry
from connectors._host import HostProblem, ZapTrigger

T = TypeVar("T")


class EngineHost:
    def zap_triggers(self, folder: Path) -> list[ZapTrigger]:
        from flows.loader import load_all

        loaded, problems = load_all([folder] if folder.exists() else [])
        if problems:
            raise HostProblem(
                "fix these zaps first (zapflow validate):\n" + "\n".join(map(str, problems))
            )
        return [
            ZapTrigger(
                zap=item.zap.zap,
                app=item.zap.trigger.app,
                event=item.zap.trigger.event,
                connection=item.zap.trigger.connection,
                enabled=item.zap.enabled,
            )
            for item in loaded
        ]

    def hook_base(self, public_url: str, app: str, connection: str, inbox: str | None) -> str:
        from flows.intake.db import InboxError
        from flows.intake.folder import app_hook_base
        from flows.intake.inbox import Inbox

        async def token() -> str:
            async with await Inbox.open(inbox) as opened:
                return await opened.hook_token(app, connection)

        try:
            return app_hook_base(public_url, app, connection, asyncio.run(token()))
        except InboxError as exc:
            raise HostProblem(str(exc)) from None

    def run_with_connection(self, app: str, name: str, work: Callable[[Any], Awaitable[T]]) -> T:
        from flows import connections, server

        owner = registry.app(app)

        async def run() -> T:
            return await work(await connections.resolve(owner, name))

        try:
            if connections.from_env(owner, name) is not None:
                return asyncio.run(run())
            try:  # stored connections live on the Prefect server
                with server.api():
                    return asyncio.run(run())
            except server.ServerError as exc:
                raise HostProblem(str(exc)) from None
        except connections.ConnectionProblem as exc:
            raise HostProblem(str(exc)) from None
