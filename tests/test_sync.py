"""`zapflow sync`: each machine's checkout of the zaps repository follows its remote, taking a
new revision only when its zaps are valid (real git repositories: a bare remote, the reviewer's
clone that pushes, the machine's clone that serve reads)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app

GOOD = """\
zap: {name}
trigger: {{app: builtin, event: catch_hook}}
steps:
  - {{id: answer, action: builtin.lookup, input: {{key: a, table: {{a: 1}}}}}}
"""

BROKEN = """\
zap: broken
trigger: {app: builtin, event: catch_hook}
steps:
  - {id: answer, action: builtin.lookup_table, input: {key: a}}
"""


def git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Ops",
        "GIT_AUTHOR_EMAIL": "ops@example.com",
        "GIT_COMMITTER_NAME": "Ops",
        "GIT_COMMITTER_EMAIL": "ops@example.com",
    }
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@pytest.fixture
def repos(tmp_path: Path) -> tuple[Path, Path]:
    """(the reviewer's clone, the machine's clone), both of one remote holding zaps/a.yaml."""
    remote, author, machine = tmp_path / "remote.git", tmp_path / "author", tmp_path / "machine"
    git(tmp_path, "init", "--quiet", "--bare", "--initial-branch=main", str(remote))
    git(tmp_path, "clone", "--quiet", str(remote), str(author))
    (author / "zaps").mkdir()
    (author / "zaps" / "a.yaml").write_text(GOOD.format(name="first"))
    (author / "README.md").write_text("our zaps\n")
    git(author, "add", ".")
    git(author, "commit", "--quiet", "-m", "first zap")
    git(author, "push", "--quiet", "origin", "HEAD:main")
    git(tmp_path, "clone", "--quiet", "--branch", "main", str(remote), str(machine))
    return author, machine


def push(author: Path, name: str, text: str, message: str) -> str:
    (author / "zaps" / name).write_text(text)
    git(author, "add", ".")
    git(author, "commit", "--quiet", "-m", message)
    git(author, "push", "--quiet", "origin", "HEAD:main")
    return git(author, "rev-parse", "HEAD")


def sync(machine: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["sync", str(machine / "zaps"), *args], env={"COLUMNS": "300"})
    return result.exit_code, result.output


def test_a_valid_revision_is_taken_and_serve_sees_its_files(repos: tuple[Path, Path]) -> None:
    author, machine = repos
    at = git(machine, "rev-parse", "HEAD")[:12]
    assert sync(machine) == (0, f"{machine / 'zaps'}: up to date at {at}\n")
    head = push(author, "b.yaml", GOOD.format(name="second"), "second zap")
    code, said = sync(machine)
    assert code == 0, said
    assert "zaps/b.yaml" in said and head[:12] in said
    assert git(machine, "rev-parse", "HEAD") == head
    assert (machine / "zaps" / "b.yaml").read_text() == GOOD.format(name="second")


def test_a_revision_with_a_broken_zap_is_not_taken_and_says_where(
    repos: tuple[Path, Path],
) -> None:
    author, machine = repos
    before = git(machine, "rev-parse", "HEAD")
    broken = push(author, "broken.yaml", BROKEN, "a zap with a typo")
    code, said = sync(machine)
    assert code == 1
    assert f"{broken[:12]} has 1 problem(s)" in said and f"stays at {before[:12]}" in said
    # named as the file will be on this machine, with its line, and what is allowed
    assert f"{machine / 'zaps' / 'broken.yaml'}:4" in said, said
    assert "did you mean 'lookup'" in said
    assert git(machine, "rev-parse", "HEAD") == before
    assert not (machine / "zaps" / "broken.yaml").exists()

    fixed = push(author, "broken.yaml", GOOD.format(name="broken"), "fix the typo")
    code, said = sync(machine)
    assert code == 0, said
    assert git(machine, "rev-parse", "HEAD") == fixed


def test_sync_only_fast_forwards_and_needs_a_checkout(
    repos: tuple[Path, Path], tmp_path: Path
) -> None:
    author, machine = repos
    push(author, "b.yaml", GOOD.format(name="second"), "second zap")
    (machine / "zaps" / "local.yaml").write_text(GOOD.format(name="local"))
    git(machine, "add", ".")
    git(machine, "commit", "--quiet", "-m", "edited on the machine")
    code, said = sync(machine)
    assert code == 1 and "sync only fast-forwards" in said, said
    assert not (machine / "zaps" / "b.yaml").exists()

    plain = tmp_path / "plain"
    plain.mkdir()
    result = CliRunner().invoke(app, ["sync", str(plain)])
    assert result.exit_code == 1 and "is not in a git checkout" in result.output

    result = CliRunner().invoke(app, ["sync", str(machine / "zaps"), "--every", "soon"])
    assert result.exit_code == 1 and "--every" in result.output and "30s" in result.output


def test_every_keeps_following_says_a_refused_revision_once_and_an_outage_once(
    repos: tuple[Path, Path], tmp_path: Path
) -> None:
    """`zapflow sync --every 1s` as a unit runs it, beside serve."""
    author, machine = repos
    proc = subprocess.Popen(
        [sys.executable, "-c", "from flows.cli import main; main()", "sync"]
        + [str(machine / "zaps"), "--every", "1s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "COLUMNS": "300"},
    )
    try:
        broken = push(author, "broken.yaml", BROKEN, "a zap with a typo")
        time.sleep(3.5)  # three rounds or more: said once
        assert git(machine, "rev-parse", "HEAD") != broken
        (tmp_path / "remote.git").rename(tmp_path / "away.git")  # the remote goes away
        time.sleep(2.5)
        (tmp_path / "away.git").rename(tmp_path / "remote.git")
        fixed = push(author, "broken.yaml", GOOD.format(name="broken"), "fix the typo")
        deadline = time.monotonic() + 30
        while git(machine, "rev-parse", "HEAD") != fixed:
            assert time.monotonic() < deadline, "the fixed revision was not taken"
            time.sleep(0.2)
        assert (machine / "zaps" / "broken.yaml").read_text() == GOOD.format(name="broken")
    finally:
        proc.terminate()  # as systemd stops it: the round in hand ends first
        said = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, said
    assert said.count("not taken") == 1, said
    outage = [line for line in said.splitlines() if "trying again every 1s" in line]
    assert outage and len(outage) == len(set(outage)), said  # each failure said once
    assert said.count("sync: works again") == 1, said
    assert f"→ {fixed[:12]}" in said, said


def test_a_remote_that_cannot_be_reached_is_named_without_its_password(
    repos: tuple[Path, Path],
) -> None:
    _, machine = repos
    git(machine, "remote", "set-url", "origin", "https://ops:s3cret@127.0.0.1:9/zaps.git")
    code, said = sync(machine)
    assert code == 1 and "git fetch" in said, said
    assert "s3cret" not in said and "127.0.0.1:9" in said, said
