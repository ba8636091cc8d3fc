"""Run-level safety nets: non-ascending chronological sources, resumed full runs with
if_source_empty, sources whose since-less read is not complete, sources that stop early."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from runtime import PipeRun, Runtime, Source, SourceConfig
from runtime.plugins import default_registry
from tests.core.helpers import dataset_pipe


class ListConfig(SourceConfig):
    type: Literal["list"]
    updated: list[int]
    chronological: bool = True
    everything: bool = True
    stop_early: bool = False


class ListSource(Source):
    """Yields one entity per configured ``_updated`` value (in the configured order)."""

    Config: ClassVar = ListConfig

    @classmethod
    def continuation(cls, config: Any) -> tuple[bool, bool, bool]:
        return True, config.chronological, True

    @classmethod
    def full_read(cls, config: Any) -> bool:
        return config.everything

    async def read(self, since: Any):
        values = [u for u in self.config.updated if since is None or u > since]
        yield [{"_id": f"e{u}", "_updated": u} for u in values]
        self.complete = not self.config.stop_early


def registry():
    r = default_registry().clone()
    r.register("source", "list", ListSource)
    return r


def list_pipe(updated: list[int], **source) -> dict:
    return {"_id": "p", "type": "pipe", "source": {"type": "list", "updated": updated, **source}}


async def runtime(tmp_path, write_config, objects) -> Runtime:
    rt = Runtime(write_config(objects), data_dir=tmp_path / "state", registry=registry())
    await rt.open()
    return rt


async def test_descending_updated_fails_a_chronological_source(tmp_path, write_config):
    rt = await runtime(tmp_path, write_config, [list_pipe([3, 2, 1])])
    try:
        result = await rt.run_pipe("p")
        assert result.status == "failed" and "_updated went from 3 to 2" in str(result.error)
        assert await rt.entities("p") == []
    finally:
        await rt.close()


async def test_descending_updated_is_fine_for_a_max_source(tmp_path, write_config):
    rt = await runtime(tmp_path, write_config, [list_pipe([3, 2, 1], chronological=False)])
    try:
        assert (await rt.run_pipe("p")).new == 3
        assert (await rt.pipe_state("p")).since == 3
    finally:
        await rt.close()


async def test_a_partial_since_less_read_does_no_deletion_tracking(tmp_path, write_config):
    rt = await runtime(tmp_path, write_config, [list_pipe([1, 2, 3])])
    try:
        await rt.run_pipe("p")
    finally:
        await rt.close()
    rt = await runtime(tmp_path, write_config, [list_pipe([3], everything=False)])
    try:
        result = await rt.run_pipe("p", full=True)
        assert (result.kind, result.deleted) == ("incremental", 0)
    finally:
        await rt.close()


async def test_a_source_that_stops_early_ends_the_run_stopped(tmp_path, write_config):
    rt = await runtime(tmp_path, write_config, [list_pipe([1, 2, 3])])
    try:
        await rt.run_pipe("p")
    finally:
        await rt.close()
    rt = await runtime(tmp_path, write_config, [list_pipe([1], stop_early=True)])
    try:
        result = await rt.run_pipe("p", full=True)
        assert (result.status, result.deleted) == ("stopped", 0)
        assert len(await rt.entities("p")) == 3
    finally:
        await rt.close()


async def test_resumed_full_run_with_if_source_empty_is_not_blocked(tmp_path, write_config):
    objects = [
        {"_id": "a", "type": "pipe", "source": {"type": "embedded", "entities": [{"_id": str(i)} for i in range(5)]}},
        dataset_pipe("b", "a", source={"type": "dataset", "dataset": "a", "if_source_empty": "fail"}),
    ]
    rt = await runtime(tmp_path, write_config, objects)
    try:
        await rt.run_pipe("a")
        run = PipeRun(rt.config.pipes["b"], rt.store)
        run.stop()  # stops after its first (and only) chunk: everything read, never finished
        assert (await run.run()).status == "stopped"
        assert (await rt.pipe_state("b")).sweep is not None
        resumed = await rt.run_pipe("b")
        assert (resumed.kind, resumed.status, resumed.read) == ("full", "completed", 0)
    finally:
        await rt.close()
