"""Discovery of installed apps through the ``zapflow.apps`` entry-point group.

Every app, built-in ones included, is found the same way, so an outside package adds an app by
declaring ``[project.entry-points."zapflow.apps"] myapp = "my_package:app"``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from functools import cache
from importlib.metadata import entry_points

from connectors._contract import Action, App, Trigger

ENTRY_POINT_GROUP = "zapflow.apps"


_registered: dict[str, App] = {}


def register(app: App) -> None:
    """Add an app in this process only (scripts, tests); installed apps use the entry point."""
    if app.name in _installed():
        raise ValueError(f"an installed app is already called {app.name!r}")
    _registered[app.name] = app


def unregister(name: str) -> None:
    _registered.pop(name, None)


def apps() -> dict[str, App]:
    """All apps by name: installed ones (loaded once per process) and registered ones."""
    return dict(sorted({**_installed(), **_registered}.items()))


@cache
def _installed() -> dict[str, App]:
    found: dict[str, App] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        app = ep.load()
        if not isinstance(app, App):
            raise TypeError(f"entry point {ep.name} = {ep.value} is not a connectors.App")
        if app.name in found:
            raise ValueError(f"two installed packages declare the app {app.name!r}")
        found[app.name] = app
    return found


def suggest(word: str, choices: Iterable[str]) -> str:
    """A "did you mean" hint for a mistyped name, or "" when nothing is close."""
    lowered = {c.lower(): c for c in sorted(choices)}
    typed = word.lower()
    close = difflib.get_close_matches(typed, list(lowered), n=1, cutoff=0.6)
    if not close:  # `fullName` for `name`: the intended word is inside what was typed
        close = [c for c in lowered if len(c) >= 3 and (c in typed or typed in c)][:1]
    return f" (did you mean {lowered[close[0]]!r}?)" if close else ""


class UnknownName(LookupError):
    """An app, trigger or action name that no installed app declares."""


def app(name: str) -> App:
    known = apps()
    if name not in known:
        raise UnknownName(
            f"unknown app {name!r}{suggest(name, set(known))}; installed apps: {', '.join(known)}"
        )
    return known[name]


def load(name: str) -> App:
    """One app, importing only its own package (the receiver process serves one app's hooks
    without loading every app's models); any app when ``name`` is not an entry point's."""
    if name in _registered:
        return _registered[name]
    for ep in entry_points(group=ENTRY_POINT_GROUP, name=name):
        loaded = ep.load()
        if isinstance(loaded, App) and loaded.name == name:
            return loaded
    return app(name)


def action(key: str) -> Action:
    """The action for ``app.action_name``."""
    app_name, _, name = key.partition(".")
    owner = app(app_name)
    if name not in owner.actions:
        raise UnknownName(
            f"app {app_name!r} has no action {name!r}"
            f"{suggest(name, set(owner.actions))}; "
            f"its actions: {', '.join(sorted(owner.actions))}"
        )
    return owner.actions[name]


def trigger(app_name: str, event: str) -> Trigger:
    owner = app(app_name)
    if event not in owner.triggers:
        allowed = ", ".join(sorted(owner.triggers)) or "none"
        raise UnknownName(
            f"app {app_name!r} has no trigger {event!r}"
            f"{suggest(event, set(owner.triggers))}; its triggers: {allowed}"
        )
    return owner.triggers[event]
