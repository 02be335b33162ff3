"""The hook table: which webhook URLs the receiver answers, and what an event from each is.

`zapflow serve` builds it from the zap folder (``flows.intake.folder``) and hands it to its
receiver process as one line of JSON on the receiver's standard input, again whenever the zaps
change. So the receiver never loads or validates zap files itself, and imports neither
pydantic nor any app's models: an app's webhook adapter is imported only when a hook of that
app is served (``connectors.registry.load``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

CATCH_HOOK = ("builtin", "catch_hook")
"""The (app, trigger) of a zap's catch hook."""


@dataclass(frozen=True)
class ZapHook:
    """``POST /hooks/zap/{zap}/{token}``: deliveries for one zap's catch hook."""

    zap: str
    token: str
    secret: str | None = None
    """Standard Webhooks secret (from the env variable the zap names in ``options.secret_env``)."""
    connection: str | None = None

    def __repr__(self) -> str:  # never the token or the secret
        return f"ZapHook(zap={self.zap!r})"


@dataclass(frozen=True)
class AppHook:
    """``POST /hooks/{app}/{connection}/{token}/{channel}``: one app connection's deliveries,
    turned into trigger events by the app's webhook adapter."""

    app: str
    connection: str
    token: str

    def __repr__(self) -> str:
        return f"AppHook(app={self.app!r}, connection={self.connection!r})"


@dataclass
class Hooks:
    """The hooks the receiver answers; replaced whole when zaps change."""

    zaps: dict[str, ZapHook] = field(default_factory=dict)
    apps: dict[tuple[str, str], AppHook] = field(default_factory=dict)

    def to_line(self) -> bytes:
        """One line of JSON (what serve writes to its receiver's standard input)."""
        table = {
            "zaps": [asdict(hook) for hook in self.zaps.values()],
            "apps": [asdict(hook) for hook in self.apps.values()],
        }
        return orjson.dumps(table) + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> Hooks:
        table: dict[str, list[dict[str, Any]]] = orjson.loads(line)
        zaps = [ZapHook(**item) for item in table["zaps"]]
        apps = [AppHook(**item) for item in table["apps"]]
        return cls(
            zaps={hook.zap: hook for hook in zaps},
            apps={(hook.app, hook.connection): hook for hook in apps},
        )
