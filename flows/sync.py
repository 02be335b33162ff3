"""A zap folder kept current from its git remote, the same on every machine (`zapflow sync`).

Zaps are reviewed in git; each machine running `zapflow serve` holds a checkout of the zaps
repository. Syncing fetches the branch's upstream and, when it moved, validates the zaps *of the
new revision* before the checkout moves to it (fast-forward only): a revision with a broken zap
never reaches a running serve, and since every machine checks the same revision the same way,
all of them either take it or keep the one they run. Serve notices the changed files itself.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from connectors._errors import ZapError


class SyncError(ZapError):
    """The zap folder could not be synced (not a checkout, no upstream, git failed …)."""


@dataclass(frozen=True)
class Synced:
    """What one sync did: ``before``/``after`` revisions (equal when nothing moved), the files
    of the zap folder it changed, and, for a refused revision, the problems found in it."""

    before: str
    after: str
    target: str
    changed: list[str]
    problems: list[str]

    @property
    def moved(self) -> bool:
        return self.before != self.after


_USERINFO = re.compile(r"(\w+://)[^/@\s]+@")


def _redacted(text: str) -> str:
    """``text`` without the user and password of any URL in it (a remote's credentials)."""
    return _USERINFO.sub(r"\1***@", text)


def _git(repo: Path, *args: str) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), *args],
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
            # unattended: a remote that wants a password fails instead of asking a terminal
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        )
    except FileNotFoundError as exc:
        raise SyncError("git is not installed (zapflow sync runs git)") from exc
    except subprocess.TimeoutExpired as exc:
        raise SyncError(f"git {args[0]} took longer than 300 s") from exc
    if done.returncode:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise SyncError(_redacted(f"git {' '.join(args)}: {said[-1] if said else 'failed'}"))
    return done.stdout.strip()


def checkout_of(folder: Path) -> tuple[Path, str]:
    """The git work tree holding ``folder`` and the folder's path inside it."""
    if not folder.is_dir():
        raise SyncError(f"{folder}: no such folder")
    try:
        root = Path(_git(folder, "rev-parse", "--show-toplevel"))
    except SyncError as exc:
        raise SyncError(
            f"{folder} is not in a git checkout: clone your zaps repository and serve its "
            f"folder ({exc})"
        ) from None
    return root, folder.resolve().relative_to(root.resolve()).as_posix()


def sync(folder: Path, upstream: str | None = None) -> Synced:
    """Fetch ``upstream`` (default: the current branch's upstream, ``@{upstream}``) and
    fast-forward the checkout to it if its zaps in ``folder`` are all valid."""
    root, inside = checkout_of(folder)
    target_ref = upstream or _upstream(root)
    remote, _, branch = target_ref.partition("/")
    _git(root, "fetch", "--quiet", remote, branch)
    before = _git(root, "rev-parse", "HEAD")
    target = _git(root, "rev-parse", f"{target_ref}^{{commit}}")
    base = before if target == before else _git(root, "merge-base", before, target)
    if base == target:
        return Synced(before, before, target, [], [])  # up to date, or ahead (not ours to push)
    if base != before:
        raise SyncError(
            f"the checkout at {root} has commits of its own that {target_ref} does not: sync "
            f"only fast-forwards (reset it to {target_ref}, or push them first)"
        )
    problems = validate_revision(root, target, inside, shown_as=folder)
    if problems:
        return Synced(before, before, target, [], problems)
    changed = _git(root, "diff", "--name-only", before, target, "--", inside or ".").splitlines()
    _git(root, "merge", "--ff-only", "--quiet", target)
    return Synced(before, target, target, changed, [])


def _upstream(root: Path) -> str:
    try:
        return _git(root, "rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{upstream}")
    except SyncError:
        raise SyncError(
            f"the checkout at {root} has no upstream branch to follow: give --upstream "
            f"origin/main, or set one (git branch --set-upstream-to origin/main)"
        ) from None


def validate_revision(root: Path, revision: str, inside: str, *, shown_as: Path) -> list[str]:
    """The problems `zapflow validate` finds in the zap folder ``inside`` at ``revision``
    (named as the files will be named in ``shown_as``), without touching the checkout."""
    from flows.loader import find_zap_files, load_all

    scratch = Path(tempfile.mkdtemp(prefix="zapflow-sync-"))
    try:
        archive = subprocess.run(
            ["git", "-C", str(root), "archive", "--format=tar", revision, "--", inside or "."],
            capture_output=True,
            timeout=300,
        )
        if archive.returncode:
            gone = archive.stderr.decode(errors="replace").strip()
            return [f"{shown_as}: not in revision {revision[:12]} ({gone})"]
        subprocess.run(["tar", "-x", "-C", str(scratch)], input=archive.stdout, check=True)
        zaps = scratch / inside if inside else scratch
        if not find_zap_files([zaps]):
            return [f"{shown_as}: revision {revision[:12]} holds no zap files (*.yaml, *.yml)"]
        _, problems = load_all([zaps])
        return [str(p).replace(str(zaps), str(shown_as)) for p in problems]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
