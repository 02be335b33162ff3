from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent
EXAMPLE_ZAPS = HERE.parent / "zaps"


@pytest.fixture
def write_zap(tmp_path: Path):
    """Write a zap file and return its path."""

    def write(text: str, name: str = "zap.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write
