"""Run kinds: full rescans by count or cron, partial rescans (Sesam's pump keys)."""

from __future__ import annotations

from datetime import UTC, datetime

from runtime import Runtime
from runtime.config.models import PumpConfig
from runtime.rescans import after_run, choose_run, rewind
from tests.core.helpers import dataset_pipe, file_pipe, write_ndjson

NOW = datetime(2026, 11, 20, 12, 30, tzinfo=UTC)


def test_no_since_means_full():
    assert choose_run(PumpConfig(), {}, None, NOW) == ("full", None)


def test_every_nth_run_is_full():
    pump = PumpConfig(rescan_run_count=3)
    assert choose_run(pump, {"runs_since_full": 1}, 5, NOW)[0] == "incremental"
    assert choose_run(pump, {"runs_since_full": 2}, 5, NOW)[0] == "full"


def test_cron_rescan_fires_once_per_schedule_tick():
    pump = PumpConfig(rescan_cron_expression="0 12 * * *")
    noon = datetime(2026, 11, 20, 12, 0, tzinfo=UTC).timestamp() * 1e6
    assert choose_run(pump, {"last_full_us": noon - 1}, 5, NOW)[0] == "full"
    assert choose_run(pump, {"last_full_us": noon + 60e6}, 5, NOW)[0] == "incremental"


def test_partial_rescan_moves_since_back():
    pump = PumpConfig(partial_rescan_run_count=2, partial_rescan_delta=3600)
    assert choose_run(pump, {"runs_since_partial": 0}, 100, NOW) == ("incremental", None)
    assert choose_run(pump, {"runs_since_partial": 1}, 100, NOW) == ("partial", -3500)
    assert choose_run(pump, {"runs_since_partial": 1}, "2026-11-20T12:00:00Z", NOW) == (
        "partial", "2026-11-20T11:00:00Z")
    assert rewind("not a time", 5) is None and rewind(True, 5) is None


def test_after_run_counts_only_completed_runs():
    assert after_run("full", {"runs_since_full": 4}, False, NOW) == {}
    done = after_run("full", {"runs_since_full": 4, "runs_since_partial": 1}, True, NOW)
    assert done["runs_since_full"] == 0 and done["runs_since_partial"] == 2 and done["last_full_us"] > 0
    assert after_run("partial", {"runs_since_full": 1}, True, NOW)["runs_since_partial"] == 0


async def test_runtime_applies_rescan_run_count_with_deletion_tracking(tmp_path, write_config):
    data = tmp_path / "config" / "data" / "rows.ndjson"
    write_ndjson(data, [{"id": i} for i in range(6)])
    cfg = write_config([file_pipe("rows", "data/rows.ndjson"),
                        dataset_pipe("copy", "rows", pump={"rescan_run_count": 3})])
    async with Runtime(cfg, data_dir=tmp_path / "state") as rt:
        await rt.run_all()
        kinds = [(await rt.run_pipe("copy")).kind for _ in range(4)]
        assert kinds == ["incremental", "incremental", "full", "incremental"]
        # a full rescan of a dataset pipe re-reads everything and finds nothing to change
        write_ndjson(data, [{"id": i} for i in range(4)])
        await rt.run_pipe("rows")
        r = await rt.run_pipe("copy")
        assert (r.kind, r.deleted) == ("incremental", 2)


async def test_partial_rescan_rereads_recent_offsets(tmp_path, write_config):
    data = tmp_path / "config" / "data" / "rows.ndjson"
    write_ndjson(data, [{"id": i} for i in range(10)])
    cfg = write_config([file_pipe("rows", "data/rows.ndjson"),
                        dataset_pipe("copy", "rows", pump={"partial_rescan_run_count": 2, "partial_rescan_delta": 4})])
    async with Runtime(cfg, data_dir=tmp_path / "state") as rt:
        await rt.run_all()
        # the full run counts as run 1 of 2, so the next is partial: since 9 moved back by 4
        first = await rt.run_pipe("copy")
        second = await rt.run_pipe("copy")
        assert (first.kind, first.read, first.changes) == ("partial", 4, 0)
        assert (second.kind, second.read) == ("incremental", 0)
