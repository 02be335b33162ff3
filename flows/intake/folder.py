"""The zap folder `zapflow serve` follows: its zaps, re-read as files change, and the hook
table (``flows.intake.hooks``) and webhook URLs they make."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from connectors import registry
from connectors._errors import ZapError
from flows.errors import Problem
from flows.intake.hooks import CATCH_HOOK, AppHook, Hooks, ZapHook
from flows.intake.inbox import Inbox
from flows.loader import find_zap_files, load_zap_file
from flows.model import Zap, with_failure_zaps
from flows.plan import plan_of


def zap_secret(zap: Zap) -> str | None:
    """The catch hook's signing secret: the environment variable ``options.secret_env`` names.

    Fails closed: a zap that asks for signatures is not served without its secret."""
    name = zap.trigger.options.get("secret_env")
    if not name:
        return None
    if not os.environ.get(str(name)):
        raise ZapError(
            f"zap {zap.zap!r} wants signed deliveries but ${name} (options.secret_env) is not set"
        )
    return os.environ[str(name)]


@dataclass
class ZapFolder:
    """The zaps of a folder, re-read and compiled (``flows.plan``) when its files change."""

    folder: Path
    report: Callable[[str], None] = print
    by_file: dict[Path, Zap] = field(default_factory=dict)
    stamps: dict[Path, float] = field(default_factory=dict)
    _served: dict[Path, list[Zap]] = field(default_factory=dict)

    @property
    def zaps(self) -> list[Zap]:
        """The zaps, each followed by the zap its ``on_failure`` steps run as."""
        return [zap for path in self.by_file for zap in self._served[path]]

    def _load(self, path: Path, zap: Zap) -> None:
        """Take a loaded definition: its on-failure zap made and both compiled, once."""
        served = with_failure_zaps([zap])
        for each in served:
            plan_of(each)
        self.by_file[path], self._served[path] = zap, served

    def refresh(self) -> bool:
        """Re-read added and changed files, forget removed ones; True if anything changed."""
        files = {p: p.stat().st_mtime for p in find_zap_files([self.folder]) if p.exists()}
        changed = False
        for path in set(self.by_file) - set(files):
            self.report(f"zap {self.by_file.pop(path).zap!r} removed ({path})")
            self._served.pop(path, None)
            changed = True
        for path, stamp in files.items():
            if self.stamps.get(path) == stamp:
                continue
            self.stamps[path] = stamp
            try:
                zap = load_zap_file(path).zap
                verb = "changed" if path in self.by_file else "loaded"
                self._load(path, zap)
            except ZapError as exc:
                problems: list[Problem] = getattr(exc, "problems", [])
                kept = " (its previous version keeps running)" if path in self.by_file else ""
                self.report(f"{path} is not valid{kept}:\n" + "\n".join(map(str, problems)))
                continue
            self.report(f"zap {zap.zap!r} {verb} ({path})")
            changed = True
        for path in set(self.stamps) - set(files):
            self.stamps.pop(path)
        return changed


async def build_hooks(
    inbox: Inbox, zaps: list[Zap], report: Callable[[str], None] | None = None
) -> Hooks:
    """The hook table of the enabled zaps. A zap that cannot be served (its signing secret is
    not set) is reported and left out; the others are served."""
    hooks = Hooks()
    for zap in zaps:
        if not zap.enabled:
            continue
        trig = zap.trigger
        owner = registry.app(trig.app)
        if (trig.app, trig.event) == CATCH_HOOK:
            try:
                secret = zap_secret(zap)
            except ZapError as exc:
                (report or print)(f"{exc}: zap {zap.zap!r} is not served until it is")
                continue
            token = await inbox.hook_token("zap", zap.zap)
            hooks.zaps[zap.zap] = ZapHook(zap.zap, token, secret, trig.connection)
        elif owner.webhook is not None and trig.connection is not None:
            key = (trig.app, trig.connection)
            if key not in hooks.apps:
                token = await inbox.hook_token(trig.app, trig.connection)
                hooks.apps[key] = AppHook(trig.app, trig.connection, token)
    return hooks


def app_hook_base(public_url: str, app: str, connection: str, token: str) -> str:
    """An app connection's hook URL without its channel: senders post to ``<this>/<channel>``
    (for CINNOX the channel is the event family; ``zapflow cinnox subscribe`` uses this too)."""
    return f"{public_url.rstrip('/')}/hooks/{app}/{connection}/{token}"


def zap_hook_url(public_url: str, zap_id: str, token: str) -> str:
    """A zap's catch hook URL."""
    return f"{public_url.rstrip('/')}/hooks/zap/{zap_id}/{token}"


def hook_urls(public_url: str, hooks: Hooks) -> list[str]:
    lines = [
        f"  catch hook of {zid}: {zap_hook_url(public_url, zid, h.token)}"
        for zid, h in hooks.zaps.items()
    ]
    for (app, connection), hook in hooks.apps.items():
        url = f"{app_hook_base(public_url, app, connection, hook.token)}/<channel>"
        lines.append(f"  {app} connection {connection}: {url}")
    return lines


def git_revision(folder: Path | None) -> str | None:
    """The git commit checked out in ``folder`` (short; ``+dirty`` when its files differ from
    it), None when it is not in git or git is not installed."""
    if folder is None:
        return None
    try:
        head = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
