"""Fixtures of the share-pattern tests: our target API on 127.0.0.1 and config helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.servers.faults import serve
from tests.servers.target_api import TargetApi


@pytest.fixture
async def target() -> AsyncIterator[TargetApi]:
    """The target API (ids on POST, ETags, Idempotency-Key, faults) on an ephemeral port."""
    server = TargetApi()
    async with serve(server):
        yield server


def target_system(url: str, **extra: Any) -> dict[str, Any]:
    """A ``system:rest`` ``target`` with the target's operations and fast retries."""
    fast = {"max_attempts": 3, "base_delay": 0.01, "max_delay": 0.02}
    return {
        "_id": "target", "type": "system:rest", "base_url": url, "read_timeout": 5,
        "retry_strategy": {"default": {"retry": False}, "429": fast, "500-599": fast, "connection": fast},
        "operations": {
            "insert": {"method": "POST", "url": "/records"},
            "update": {"method": "PUT", "url": "/records/{{ entity.id }}"},
            "delete": {"method": "DELETE", "url": "/records/{{ entity.id }}"},
            "lookup": {"method": "GET", "url": "/records", "params": {"ref": "{{ entity._id }}"},
                       "payload_property": "data"},
            "get": {"method": "GET", "url": "/records/{{ entity.id }}"},
            "insert-batch": {"method": "POST", "url": "/records/batch"},
        },
        **extra,
    }


def entities(n: int, **fields: Any) -> list[dict[str, Any]]:
    """``n`` entities ``e000``.. with a name, an amount and ``ref`` = their ``_id`` (the external
    reference the lookup finds them by)."""
    return [{"_id": f"e{i:03}", "name": f"entity {i}", "amount": i, "ref": f"e{i:03}", **fields} for i in range(n)]


def share_pipe(pipe_id: str, items: list[dict[str, Any]], dead_letters: bool = True, **sink: Any) -> dict[str, Any]:
    """A pipe sending embedded entities through a ``rest`` sink to ``target``."""
    pipe: dict[str, Any] = {
        "_id": pipe_id, "type": "pipe", "source": {"type": "embedded", "entities": items},
        "sink": {"type": "rest", "system": "target", "operation": "insert", "concurrency": 8, **sink},
    }
    if dead_letters:
        pipe["pump"] = {"dead_letter_dataset": f"{pipe_id}-dead", "max_retries_per_entity": 2}
    return pipe
