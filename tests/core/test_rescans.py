"""Run kinds: full rescans by count or cron, partial rescans (Sesam's pump keys)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import ClassVar, Literal

import pytest

from runtime import BadDataError, Runtime, Source, SourceConfig
from runtime.config.models import PumpConfig
from runtime.plugins import default_registry
from runtime.rescans import PARTIAL_RESCAN_ATTEMPTS, after_run, choose_run, rewind
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
    assert after_run("full", {"runs_since_full": 4}, "failed", NOW) == {}
    assert after_run("partial", {"runs_since_full": 4}, "stopped", NOW) == {}
    done = after_run("full", {"runs_since_full": 4, "runs_since_partial": 1}, "completed", NOW)
    assert done["runs_since_full"] == 0 and done["runs_since_partial"] == 2 and done["last_full_us"] > 0
    assert after_run("partial", {"runs_since_full": 1}, "completed", NOW)["runs_since_partial"] == 0


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


@pytest.mark.parametrize(("since", "delta", "moved"), [
    ("2024-01-01 10:02:00", 60, "2024-01-01 10:01:00"),
    ("2024-01-01T10:02:00.000Z", 60, "2024-01-01T10:01:00.000Z"),
    ("2024-01-01T10:02:00+01:00", 3600, "2024-01-01T09:02:00+01:00"),
    ("2024-01-01T10:02:00,123456789Z", 0.5, "2024-01-01T10:01:59,623456000Z"),
    ("2024-01-01T10:02Z", 1, "2024-01-01T10:01Z"),  # digits the form does not show are truncated
    ("2024-01-01", 3600, "2023-12-31"),
])
def test_rewind_keeps_the_form_of_a_datetime_since(since, delta, moved):
    assert rewind(since, delta) == moved
    assert rewind("2024-13-01 10:00:00", 60) is None  # not a date: cannot be rewound


ROWS: list[dict] = []


class ChangesConfig(SourceConfig):
    type: Literal["changes"]
    chronological: bool = True
    oldest_since: str | None = None


def instant(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class ChangesSource(Source):
    """A change feed that, as APIs do, parses the since it is given and returns the rows updated
    after that instant, in ``_updated`` order; ``oldest_since``: it refuses older sinces (a
    limited change history). A plugin source, not a server: our test API's sinces are integers."""

    Config: ClassVar = ChangesConfig
    supports_since = True

    @classmethod
    def continuation(cls, config):
        return True, config.chronological, True

    async def read(self, since):
        oldest = self.config.oldest_since
        if since is not None and oldest is not None and instant(since) < instant(oldest):
            raise BadDataError(f"since {since!r} is older than the history kept", location="changes")
        yield [dict(r) for r in ROWS if since is None or instant(r["_updated"]) > instant(since)]


def changes_registry():
    r = default_registry().clone()
    r.register("source", "changes", ChangesSource)
    return r


def changes_pipe(**source) -> dict:
    return {"_id": "p", "type": "pipe", "source": {"type": "changes", **source},
            "pump": {"partial_rescan_run_count": 2, "partial_rescan_delta": 60}}


@pytest.mark.parametrize("rows", [
    ["2024-01-01 10:00:00", "2024-01-01 10:01:30", "2024-01-01 10:02:00"],
    ["2024-01-01T10:00:00.000Z", "2024-01-01T10:01:00.250Z", "2024-01-01T10:02:00.000Z"],
])
async def test_partial_rescan_over_datetime_sinces(tmp_path, write_config, rows):
    """The rewound since keeps the feed's form and is compared with its rows by instant: before,
    ``2024-01-01 10:01:30`` < ``2024-01-01T10:01:00`` (as strings) failed every partial rescan."""
    ROWS[:] = [{"_id": f"r{i}", "_updated": u} for i, u in enumerate(rows)]
    cfg = write_config([changes_pipe()])
    async with Runtime(cfg, data_dir=tmp_path / "state", registry=changes_registry()) as rt:
        assert (await rt.run_pipe("p")).read == 3
        partial = await rt.run_pipe("p")
        assert (partial.kind, partial.status, partial.read) == ("partial", "completed", 2), partial.error
        assert (await rt.store.pipe_state("p")).since == rows[2]
        ROWS.append({"_id": "new", "_updated": rows[2][:15] + "3" + rows[2][16:]})  # one minute later
        after = await rt.run_pipe("p")
        assert (after.kind, after.status, after.read) == ("incremental", "completed", 1), after.error


async def test_max_since_is_by_instant(tmp_path, write_config):
    ROWS[:] = [{"_id": "a", "_updated": "2024-01-01 10:00:00"}, {"_id": "b", "_updated": "2024-01-01T09:00:00Z"}]
    cfg = write_config([changes_pipe(chronological=False)])
    async with Runtime(cfg, data_dir=tmp_path / "state", registry=changes_registry()) as rt:
        assert (await rt.run_pipe("p")).ok
        assert (await rt.store.pipe_state("p")).since == "2024-01-01 10:00:00"  # not the larger string


async def test_a_partial_rescan_that_keeps_failing_is_skipped(tmp_path, write_config):
    """Failed runs do not count, so a failing partial rescan used to be chosen again forever."""
    ROWS[:] = [{"_id": "a", "_updated": "2024-01-01 10:00:00"}, {"_id": "b", "_updated": "2024-01-01 10:02:00"}]
    cfg = write_config([changes_pipe(oldest_since="2024-01-01 10:01:30")])
    async with Runtime(cfg, data_dir=tmp_path / "state", registry=changes_registry()) as rt:
        assert (await rt.run_pipe("p")).ok
        tries = [await rt.run_pipe("p") for _ in range(PARTIAL_RESCAN_ATTEMPTS)]
        assert {(r.kind, r.status) for r in tries} == {("partial", "failed")}
        assert "partial rescan from since '2024-01-01 10:01:00': since '2024-01-01 10:01:00' is older" in str(
            tries[-1].error)
        then = await rt.run_pipe("p")
        assert (then.kind, then.status) == ("incremental", "completed")
        skipped = (await rt.store.pipe_state("p")).info["partial_rescan_skipped"]
        assert skipped["failures"] == PARTIAL_RESCAN_ATTEMPTS and "is older" in skipped["error"]
        assert (await rt.run_pipe("p")).kind == "partial"  # its next turn comes as usual
