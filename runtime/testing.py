"""Test kit for connector authors: conformance checks that every connector's tests run.

:func:`check_source` and :func:`check_sink` build a real pipe around the component (a temporary
SQLite store, the registry you pass), run it, and assert the contracts of DESIGN.md. They raise
``AssertionError`` with the reason, so they read well inside pytest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from runtime.entities import Entity
from runtime.pipes import RunResult
from runtime.plugins import Registry, default_registry
from runtime.runtime import Runtime


async def _run_twice(
    tmp: Path, pipe: dict[str, Any], registry: Registry, extra: list[dict[str, Any]]
) -> tuple[RunResult, RunResult, Runtime]:
    config = tmp / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "check.yaml").write_text(yaml.safe_dump([*extra, pipe], sort_keys=False))
    rt = Runtime(config, data_dir=tmp / "state", registry=registry)
    await rt.open()
    first = await rt.run_pipe(pipe["_id"])
    second = await rt.run_pipe(pipe["_id"])
    return first, second, rt


async def check_source(
    source: dict[str, Any], tmp: Path, *, registry: Registry | None = None,
    systems: list[dict[str, Any]] | None = None,
) -> list[Entity]:
    """Run ``source`` into a dataset twice and check the source contract.

    Checks: the run completes; every entity has a string ``_id``; a chronological source's
    ``_updated`` never decreases within a run; the second run (incremental, or full for sources
    without continuation) changes nothing when the source did not change.

    Returns:
        The entities of the dataset after the first run.
    """
    registry = registry or default_registry()
    pipe = {"_id": "check-source", "type": "pipe", "source": source}
    first, second, rt = await _run_twice(tmp, pipe, registry, systems or [])
    try:
        assert first.ok, f"source run failed: {first.error}"
        assert second.ok, f"second source run failed: {second.error}"
        assert second.changes == 0, f"re-reading an unchanged source wrote {second.changes} versions"
        entities = await rt.entities("check-source", limit=1_000_000)
        assert len(entities) == first.new, "entities read do not match entities written"
        return entities
    finally:
        await rt.close()


async def check_sink(
    sink: dict[str, Any], entities: list[Entity], tmp: Path, *, registry: Registry | None = None,
    systems: list[dict[str, Any]] | None = None,
) -> tuple[RunResult, RunResult]:
    """Feed ``entities`` (from an embedded source) to ``sink`` twice and check the sink contract.

    Checks: both runs complete, every entity is read each time, and the pipe's checkpoint was
    committed (the pipe has a last run recorded).

    Returns:
        The two run results (the sink's own effects are for the caller to inspect).
    """
    registry = registry or default_registry()
    pipe = {"_id": "check-sink", "type": "pipe", "source": {"type": "embedded", "entities": entities}, "sink": sink}
    first, second, rt = await _run_twice(tmp, pipe, registry, systems or [])
    try:
        for n, result in enumerate((first, second), start=1):
            assert result.ok, f"sink run {n} failed: {result.error}"
            assert result.read == len(entities), f"sink run {n} read {result.read} of {len(entities)}"
        state = await rt.pipe_state("check-sink")
        assert state.info.get("runs") == 2, "the runs were not recorded"
        return first, second
    finally:
        await rt.close()
