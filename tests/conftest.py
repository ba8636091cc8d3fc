"""Fixtures shared by every test: a temporary store and config directories."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from runtime.store import SqliteStore

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """An open SQLite store in a temporary directory."""
    s = SqliteStore(tmp_path / "state.db")
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def write_config(tmp_path: Path):
    """Write config objects to ``tmp_path/config/<name>.yaml``; returns the config directory."""
    root = tmp_path / "config"
    root.mkdir(exist_ok=True)

    def write(objects: list[dict] | dict, name: str = "pipes") -> Path:
        (root / f"{name}.yaml").write_text(yaml.safe_dump(objects, sort_keys=False))
        return root

    return write
