"""LibreOffice for the tests that check a file zapflow wrote opens in it.

``soffice`` is found on the PATH; when it is missing and this runs as root with apt-get, the
Debian package ``libreoffice-calc-nogui`` is installed once (non-interactively). Only when that
cannot be done are those tests skipped, saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

PACKAGE = "libreoffice-calc-nogui"
INSTALL_TIMEOUT = 900
CONVERT_TIMEOUT = 120
CSV_FILTER = "csv:Text - txt - csv (StarCalc):44,34,76,1"
"""Comma-separated, double-quoted, UTF-8 (76), from the first line."""


def find() -> str | None:
    return shutil.which("soffice") or shutil.which("libreoffice")


def _apt(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(
        ["apt-get", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
    )


def install() -> str:
    """The path of soffice, installing it if need be; or a reason it cannot be had."""
    found = find()
    if found:
        return found
    if shutil.which("apt-get") is None:
        raise RuntimeError(
            f"LibreOffice is not installed and there is no apt-get to install {PACKAGE}"
        )
    if os.geteuid() != 0:
        raise RuntimeError(f"LibreOffice is not installed; installing {PACKAGE} needs root")
    install_args = ("install", "-y", "--no-install-recommends", PACKAGE)
    done = _apt(*install_args)
    if done.returncode != 0:  # the package lists may be missing or stale
        _apt("update")
        done = _apt(*install_args)
    found = find()
    if done.returncode != 0 or not found:
        tail = (done.stderr or done.stdout).strip()[-500:]
        raise RuntimeError(f"apt-get could not install {PACKAGE}: {tail}")
    return found


def to_csv(soffice: str, workbook: Path, out_dir: Path) -> Path:
    """Convert a workbook's first sheet to CSV with LibreOffice; the CSV's path."""
    profile = Path("/tmp") / f"zapflow-lo-profile-{uuid.uuid4().hex}"
    try:
        done = subprocess.run(
            [
                soffice,
                f"-env:UserInstallation=file://{profile}",
                "--headless",
                "--convert-to",
                CSV_FILTER,
                "--outdir",
                str(out_dir),
                str(workbook),
            ],
            capture_output=True,
            text=True,
            timeout=CONVERT_TIMEOUT,
            check=False,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    converted = out_dir / (workbook.stem + ".csv")
    if done.returncode != 0 or not converted.exists():
        raise AssertionError(f"LibreOffice could not open {workbook.name}: {done.stderr.strip()}")
    return converted
