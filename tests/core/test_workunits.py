"""Work units (DIL): planning, the ledger, execution with isolation, resumption inside a unit,
and deletion tracking across the units of a sweep.

The source here is a test component (``unit_pages``) reading pages from a JSON file in the
config directory, so each test controls what every unit returns and sees what every unit was
asked for (a log of (unit, page) requests). Real-server tests of the REST source over work units
live in tests/rest.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from runtime.plugins import default_registry
from runtime.workunits import WindowsConfig, WorkUnitsConfig
from runtime.workunits.planning import plan, windows
from tests.core.helpers import file_pipe, write_ndjson
from tests.core.units_source import (
    PagesSource,
    Runtime,
    live_ids,
    pages,
    requests,
    units_pipe,
    units_registry,
    write_units,
)


@pytest.fixture
def registry():
    return units_registry()

# -- planning ---------------------------------------------------------------------------------

def test_windows_by_day_week_and_month_close_when_their_end_has_passed():
    now = datetime(2024, 3, 10, 12, tzinfo=UTC)
    days = list(windows(WindowsConfig(start="2024-03-08", unit="day"), now))
    assert [k for k, _, _ in days] == ["2024-03-08T00:00:00Z", "2024-03-09T00:00:00Z", "2024-03-10T00:00:00Z"]
    assert [closed for _, _, closed in days] == [True, True, False]  # the last window is open
    assert days[0][1] == {"window_start": "2024-03-08T00:00:00Z", "window_end": "2024-03-09T00:00:00Z"}
    months = list(windows(WindowsConfig(start="2024-01-31", end="2024-04-15", unit="month"), now))
    assert [v["window_end"] for _, v, _ in months] == [
        "2024-02-29T00:00:00Z", "2024-03-29T00:00:00Z", "2024-04-15T00:00:00Z"]  # clipped to a fixed end
    weeks = list(windows(WindowsConfig(start="2024-02-26T06:00:00+01:00", unit="week", size=1), now))
    assert [k for k, _, _ in weeks] == ["2024-02-26T05:00:00Z", "2024-03-04T05:00:00Z"]


def test_a_window_bound_that_is_no_date_is_a_config_error(tmp_path, write_config):
    from runtime.config import load_config
    from runtime.errors import ConfigError

    reg = default_registry().clone()
    reg.register("source", "unit_pages", PagesSource)
    cfg = write_config([units_pipe({"windows": {"start": "last tuesday"}})])
    with pytest.raises(ConfigError, match=r"work_units.windows.start.*ISO 8601"):
        load_config(cfg, reg)


async def test_the_product_of_a_dataset_and_windows_with_new_and_retired_values(store):
    await store.write_batch("surveys", [{"_id": "s1", "name": "one"}, {"_id": "s2", "name": "two"}],
                            pipe="p", checkpoint=None)
    config = WorkUnitsConfig(dataset="surveys", windows=WindowsConfig(start="2024-01-01", end="2024-01-03"))
    planned = await plan(config, store, pipe="x")
    assert [k for k, _, _ in planned] == ["s1|2024-01-01T00:00:00Z", "s1|2024-01-02T00:00:00Z",
                                          "s2|2024-01-01T00:00:00Z", "s2|2024-01-02T00:00:00Z"]
    assert planned[0][1] == {"_id": "s1", "name": "one", "window_start": "2024-01-01T00:00:00Z",
                             "window_end": "2024-01-02T00:00:00Z"}
    assert await store.plan_units("x", planned) == (4, 0)
    await store.write_batch("surveys", [{"_id": "s2", "_deleted": True}, {"_id": "s3"}], pipe="p", checkpoint=None)
    assert await store.plan_units("x", await plan(config, store, pipe="x")) == (2, 2)
    assert (await store.unit_counts("x")) == {"pending": 4, "retired": 2}


async def test_the_ledger_plans_claims_and_finishes_100k_units_in_batched_statements(store):
    from runtime.store.protocol import Checkpoint, UnitProgress

    planned = [(f"u{i:06d}", {"i": i}, False) for i in range(100_000)]
    assert await store.plan_units("p", planned) == (100_000, 0)
    claimed = await store.claim_units("p", "run-1", limit=100_000, lease_s=60)
    assert len(claimed) == 100_000 and claimed[5].variables == {"i": 5}
    progress = {u.key: UnitProgress("done", watermark=u.variables["i"]) for u in claimed}
    await store.save_checkpoint("p", Checkpoint(None, None, progress))
    assert await store.unit_counts("p") == {"done": 100_000}
    assert (await store.work_units("p"))[7].watermark == 7


# -- execution ----------------------------------------------------------------------------------

async def test_units_run_concurrently_bounded_and_commit_pages_with_their_progress(tmp_path, write_config, registry):
    cfg = write_config([units_pipe({"values": ["a", "b", "c", "d", "e"], "max_concurrent_units": 2})])
    write_units(cfg, {k: {"pages": pages(k, 3)} for k in "abcde"})
    async with Runtime(cfg, data_dir=tmp_path / "state", registry=registry) as rt:
        result = await rt.run_pipe("survey")
        assert result.status == "completed" and result.units["done"] == 5
        assert len(await live_ids(rt, "responses")) == 30
        assert PagesSource.peak == 2
        units = {u.key: u for u in await rt.store.work_units("survey")}
        assert {u.status for u in units.values()} == {"done"} and units["a"].watermark == 3
        entity = (await rt.entity("responses", "a-0-0"))[0]
        assert entity["unit"] == "a" and entity["vars"] == {"value": "a"}  # the unit's variables
        again = await rt.run_pipe("survey")  # values are open units: read again, from their watermark
        assert again.kind == "incremental" and again.units["done"] == 5
        assert "a:0:3" in requests(cfg)


async def test_max_units_per_run_leaves_the_rest_for_the_next_run(tmp_path, write_config, registry):
    cfg = write_config([units_pipe({"values": ["a", "b", "c"], "max_units_per_run": 2})])
    write_units(cfg, {k: {"pages": pages(k, 1)} for k in "abc"})
    async with Runtime(cfg, data_dir=tmp_path / "state", registry=registry) as rt:
        first = await rt.run_pipe("survey")
        assert first.units["done"] == 2 and await rt.store.unit_counts("survey") == {"done": 2, "pending": 1}
        assert (await rt.pipe_state("survey")).sweep is not None  # the sweep is not over
        second = await rt.run_pipe("survey")
        assert second.kind == "full" and second.units["done"] == 1
        assert (await rt.pipe_state("survey")).sweep is None


async def test_a_failing_unit_retries_alone_ends_dead_and_runs_alone_after_retry(tmp_path, write_config, registry):
    units = {"values": ["a", "b", "c"], "max_attempts": 3, "retry_backoff_s": 0}
    cfg = write_config([units_pipe(units)])
    write_units(cfg, {"a": {"pages": pages("a", 1)}, "b": {"fail": True}, "c": {"pages": pages("c", 1)}})
    async with Runtime(cfg, data_dir=tmp_path / "state", registry=registry) as rt:
        first = await rt.run_pipe("survey")
        assert first.status == "completed"  # only a unit failed
        assert first.units | {} == {**first.units, "done": 2, "failed": 1}
        for _ in range(2):
            await rt.run_pipe("survey")
        b = {u.key: u for u in await rt.store.work_units("survey")}["b"]
        assert (b.status, b.attempts) == ("dead", 3) and "unit b is down" in b.last_error
        events = [e.event for e in await rt.execution_log("survey")]
        assert events.count("unit-failed") == 2 and events.count("unit-dead") == 1
        write_units(cfg, {"a": {"pages": pages("a", 1)}, "b": {"pages": pages("b", 2)},
                          "c": {"pages": pages("c", 1)}})
        (cfg / "requests.log").unlink()
        assert await rt.store.retry_units("survey", ["b"]) == 1
        fixed = await rt.run_pipe("survey")
        assert fixed.units["done"] >= 1 and {r.split(":")[0] for r in requests(cfg)} >= {"b"}
        assert {f"b-{p}-{i}" for p in range(2) for i in range(2)} <= await live_ids(rt, "responses")


async def test_a_unit_resumes_at_its_last_committed_page(tmp_path, write_config, registry):
    cfg = write_config([units_pipe({"values": ["a"], "retry_backoff_s": 0})])
    write_units(cfg, {"a": {"pages": pages("a", 4), "fail_at": 2}})
    async with Runtime(cfg, data_dir=tmp_path / "state", registry=registry) as rt:
        first = await rt.run_pipe("survey")
        assert first.units["failed"] == 1
        assert (await rt.store.work_units("survey"))[0].checkpoint == 2
        write_units(cfg, {"a": {"pages": pages("a", 4)}})
        await rt.run_pipe("survey")
        assert requests(cfg) == ["a:0:None", "a:1:None", "a:2:None", "a:3:None"]  # pages 0 and 1 once
        assert len(await live_ids(rt, "responses")) == 8


async def test_deletions_wait_until_every_unit_of_the_sweep_is_done(tmp_path, write_config, registry):
    cfg = write_config([units_pipe({"values": ["a", "b"], "retry_backoff_s": 0})])
    write_units(cfg, {"a": {"pages": pages("a", 2)}, "b": {"pages": pages("b", 2)}})
    async with Runtime(cfg, data_dir=tmp_path / "state", registry=registry) as rt:
        await rt.run_pipe("survey")
        assert len(await live_ids(rt, "responses")) == 8
        # a record leaves unit a's range while unit b is failing
        write_units(cfg, {"a": {"pages": [[{"_id": "a-0-0"}, {"_id": "a-0-1"}], [{"_id": "a-1-0"}]]},
                          "b": {"fail": True}})
        failing = await rt.run_pipe("survey", full=True)
        assert failing.status == "completed" and failing.deleted == 0 and failing.units["failed"] == 1
        assert "a-1-1" in await live_ids(rt, "responses")  # not while unit b is failed
        write_units(cfg, {"a": {"pages": [[{"_id": "a-0-0"}, {"_id": "a-0-1"}], [{"_id": "a-1-0"}]]},
                          "b": {"pages": pages("b", 2)}})
        done = await rt.run_pipe("survey")
        assert (done.kind, done.deleted) == ("full", 1)  # the sweep went on and ended with its deletions
        assert "a-1-1" not in await live_ids(rt, "responses") and len(await live_ids(rt, "responses")) == 7


async def test_units_from_a_dataset_run_after_its_writer(tmp_path, write_config, registry):
    write_ndjson(tmp_path / "config" / "data" / "surveys.ndjson", [{"id": "s1"}, {"id": "s2"}])
    cfg = write_config([units_pipe({"dataset": "surveys"}), file_pipe("surveys", "data/surveys.ndjson")])
    write_units(cfg, {"s1": {"pages": pages("s1", 1)}, "s2": {"pages": pages("s2", 1)}})
    async with Runtime(cfg, data_dir=tmp_path / "state", registry=registry) as rt:
        assert rt.pipe_ids() == ["surveys", "survey"]
        results = await rt.run_all()
        assert [r.pipe for r in results][:2] == ["surveys", "survey"]
        assert await live_ids(rt, "responses") == {"s1-0-0", "s1-0-1", "s2-0-0", "s2-0-1"}


async def test_ledger_keys_holding_nul_are_planned_and_finished_apart(store):
    from runtime.store.protocol import Checkpoint, UnitProgress

    keys = ["a", "a\x00", "a\x00b", "é\"'\\"]
    assert await store.plan_units("p", [(k, {"k": k}, False) for k in keys]) == (4, 0)
    claimed = await store.claim_units("p", "run", limit=10, lease_s=60)
    assert [u.key for u in claimed] == sorted(keys)
    await store.save_checkpoint("p", Checkpoint(None, None, {"a\x00": UnitProgress("done", watermark=1)}))
    await store.save_checkpoint("p", Checkpoint(None, None, {"a": UnitProgress("done", watermark=2)}))
    units = {u.key: u for u in await store.work_units("p")}
    assert (units["a\x00"].status, units["a\x00"].watermark) == ("done", 1)
    assert (units["a"].status, units["a"].watermark) == ("done", 2)
    assert units["a\x00b"].status == "running"
    assert await store.plan_units("p", [("a\x00b", {}, False)]) == (0, 3)  # the others retire
