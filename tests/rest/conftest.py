"""Fixtures of the REST connector tests: our fault-injection API and config helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from runtime import Runtime
from tests.servers.faulty_api import FaultyApi, serve


@pytest.fixture
async def api() -> AsyncIterator[FaultyApi]:
    """The fault-injection API on 127.0.0.1 with 25 items (``i00``..``i24``)."""
    server = FaultyApi()
    for n in range(25):
        server.upsert(f"i{n:02}", name=f"item {n}", value=n)
    async with serve(server):
        yield server


def system(url: str, **extra: Any) -> dict[str, Any]:
    """A ``system:rest`` object named ``api`` with fast retries (tests need no long backoff)."""
    return {
        "_id": "api", "type": "system:rest", "base_url": url,
        "retry_strategy": {"default": {"retry": False},
                           "429": {"max_attempts": 4, "base_delay": 0.01, "max_delay": 0.05},
                           "500-599": {"max_attempts": 4, "base_delay": 0.01, "max_delay": 0.05},
                           "connection": {"max_attempts": 4, "base_delay": 0.01, "max_delay": 0.05}},
        **extra,
    }


def collect_pipe(pipe_id: str = "items", **source: Any) -> dict[str, Any]:
    """A pipe reading ``/items/page`` with page-number paging into dataset ``pipe_id``."""
    src = {
        "type": "rest", "system": "api", "url": "/items/page", "payload_property": "data",
        "id_expression": "{{ id }}",
        "paging": {"type": "page", "page_size": 10, "size_param": "per_page"},
        **source,
    }
    return {"_id": pipe_id, "type": "pipe", "source": src, "batch_size": 10}


def runtime(config_dir: Path, tmp_path: Path) -> Runtime:
    return Runtime(config_dir, data_dir=tmp_path / "data")


async def ids(rt: Runtime, dataset: str) -> dict[str, dict[str, Any]]:
    """Latest non-deleted entities of a dataset by ``_id``."""
    entities = await rt.entities(dataset, limit=100_000)
    return {e["_id"]: e for e in entities if not e.get("_deleted")}


def truth(api: FaultyApi) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in api.items.items()}
