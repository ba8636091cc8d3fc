"""Data safety of full runs and circuit breakers (issue 8 item 1, issue 14 items 1 and 2).

Each test names the failure it guards against: deletions made visible by a run that tripped, a
safe-by-default guard against mass deletion, a rollback that leaves the tripping run's visible
changes behind, a failed full run whose deletions are never made, a dataset source over an input
that is not populated, ``--full`` over a ``disable_set_last_seen`` pipe, operator actions racing a
running pipe, and compaction removing versions a consumer has not read.
"""

from __future__ import annotations

import anyio
import pytest

from runtime import OperationRefusedError, Runtime
from runtime.store import make_store
from tests.core.helpers import dataset_pipe, file_pipe, write_ndjson


def records(n: int, **extra) -> list[dict]:
    return [{"id": i, "v": f"value-{i}", **extra} for i in range(n)]


@pytest.fixture
def data_file(tmp_path):
    return tmp_path / "config" / "data" / "rows.ndjson"


async def visible(rt: Runtime, dataset: str) -> dict[str, dict]:
    """The latest visible version of each id, without the dataset's generated fields."""
    found = await rt.entities(dataset, limit=100_000)
    return {e["_id"]: {k: v for k, v in e.items() if k not in ("_updated", "_previous", "_ts", "_hash")}
            for e in found}


def live(entities: dict[str, dict]) -> set[str]:
    return {i for i, e in entities.items() if not e.get("_deleted")}


# -- safe by default: circuit_breaker_deletion_factor ---------------------------------------------

async def test_deleting_more_than_half_trips_by_default_and_holds_every_deletion(tmp_path, write_config, data_file,
        store_url):
    write_ndjson(data_file, records(10))
    cfg = write_config([file_pipe("rows", "data/rows.ndjson")])  # no breaker configured
    async with Runtime(cfg, data_dir=tmp_path / "state", store=store_url) as rt:
        await rt.run_pipe("rows")
        write_ndjson(data_file, records(4))  # a truncated export: 6 of 10 gone
        tripped = await rt.run_pipe("rows")
        assert tripped.status == "failed" and "circuit_breaker_deletion_factor" in str(tripped.error)
        assert len(live(await visible(rt, "rows"))) == 10  # nothing deleted visibly
        info = await rt.dataset("rows")
        assert (info.ids, info.deleted, info.held) == (10, 0, 6)
        assert await rt.rollback_breaker("rows") == 6
        assert (await rt.dataset("rows")).held == 0
        write_ndjson(data_file, records(10))
        assert (await rt.run_pipe("rows")).status == "completed"
        assert len(live(await visible(rt, "rows"))) == 10


async def test_deleting_half_or_with_the_guard_off_deletes(tmp_path, write_config, data_file, store_url):
    write_ndjson(data_file, records(10))
    guarded = file_pipe("rows", "data/rows.ndjson")
    off = file_pipe("rows", "data/rows.ndjson", sink={"type": "dataset", "circuit_breaker_deletion_factor": None})
    cfg = write_config([guarded])
    async with Runtime(cfg, data_dir=tmp_path / "state", store=store_url) as rt:
        await rt.run_pipe("rows")
        write_ndjson(data_file, records(5))  # exactly half: not more than half
        assert (await rt.run_pipe("rows")).deleted == 5
    write_config([off])
    write_ndjson(data_file, [])
    async with Runtime(cfg, data_dir=tmp_path / "state", store=store_url) as rt:
        result = await rt.run_pipe("rows")
        assert (result.status, result.deleted) == ("completed", 5)


async def test_a_commit_exposes_the_held_deletions(tmp_path, write_config, data_file, store_url):
    write_ndjson(data_file, records(10))
    cfg = write_config([file_pipe("rows", "data/rows.ndjson")])
    async with Runtime(cfg, data_dir=tmp_path / "state", store=store_url) as rt:
        await rt.run_pipe("rows")
        write_ndjson(data_file, records(2))
        assert (await rt.run_pipe("rows")).status == "failed"
        assert await rt.commit_breaker("rows") == 8
        assert live(await visible(rt, "rows")) == {"0", "1"}
        info = await rt.dataset("rows")
        assert (info.ids, info.deleted, info.held) == (10, 8, 0)


# -- all or nothing; rollback restores the state before the run -----------------------------------

async def test_rollback_reverts_what_the_tripping_run_made_visible(tmp_path, write_config, data_file, store_url):
    write_ndjson(data_file, records(10))
    sink = {"type": "dataset", "circuit_breaker_threshold_count": 3}
    cfg = write_config([file_pipe("up", "data/rows.ndjson"), dataset_pipe("down", "up", batch_size=2, sink=sink)])
    async with Runtime(cfg, data_dir=tmp_path / "state", store=store_url) as rt:
        await rt.run_all()
        before = await visible(rt, "down")
        since_before = (await rt.pipe_state("down")).since
        write_ndjson(data_file, [*records(10, changed=True), {"id": 99, "v": "new"}])
        await rt.run_pipe("up")
        tripped = await rt.run_pipe("down")
        assert tripped.status == "failed" and "tripped" in str(tripped.error)
        during = await visible(rt, "down")
        assert sum(1 for e in during.values() if e.get("changed")) == 3  # the limit became visible
        assert await rt.rollback_breaker("down") == 11  # 8 held removed + 3 visible reverted
        assert await visible(rt, "down") == before
        assert (await rt.pipe_state("down")).since == since_before
        history = await rt.entity("down", "0", history=True)
        assert [bool(v.get("changed")) for v in history] == [False, True, False]  # reverted by a new version


async def test_rollback_deletes_an_id_the_tripping_run_created(tmp_path, write_config, data_file, store_url):
    write_ndjson(data_file, records(4))
    sink = {"type": "dataset", "circuit_breaker_threshold_count": 1}
    cfg = write_config([file_pipe("rows", "data/rows.ndjson", batch_size=1, sink=sink)])
    async with Runtime(cfg, data_dir=tmp_path / "state", store=store_url) as rt:
        await rt.run_pipe("rows")
        write_ndjson(data_file, [*records(4), {"id": 7, "v": "n7"}, {"id": 8, "v": "n8"}])
        assert (await rt.run_pipe("rows")).status == "failed"
        assert "7" in await visible(rt, "rows")  # the first new id became visible
        await rt.rollback_breaker("rows")
        after = await visible(rt, "rows")
        assert live(after) == {"0", "1", "2", "3"} and after["7"]["_deleted"] is True


# -- a failed full run is resumed as a full run -------------------------------------------------

FLAKY = '''
from pathlib import Path

HERE = Path(__file__).parent


def drop_or_fail(entities):
    """Fails while FAIL exists; drops the ids listed in DROP."""
    if (HERE / "FAIL").exists():
        raise RuntimeError("transform failed on purpose")
    drop = set((HERE / "DROP").read_text().split()) if (HERE / "DROP").exists() else set()
    return [e for e in entities if e["_id"] not in drop]
'''


async def test_a_full_run_failing_before_its_first_batch_is_resumed_as_full(tmp_path, write_config, data_file,
        store_url):
    write_ndjson(data_file, records(4))
    module = f"flaky_full_{store_url is None}"  # one per backend: modules are process-wide, FLAKY's HERE is not
    cfg = write_config([
        file_pipe("up", "data/rows.ndjson"),
        dataset_pipe("down", "up", transform={"type": "python", "function": f"{module}:drop_or_fail"}),
    ])
    (cfg / f"{module}.py").write_text(FLAKY)
    async with Runtime(cfg, data_dir=tmp_path / "state", store=store_url) as rt:
        await rt.run_all()
        (cfg / "DROP").write_text("1")
        (cfg / "FAIL").write_text("")
        failed = await rt.run_pipe("down", full=True)
        assert failed.status == "failed" and failed.changes == 0
        (cfg / "FAIL").unlink()
        resumed = await rt.run_pipe("down")
        assert (resumed.kind, resumed.deleted) == ("full", 1)
        assert live(await visible(rt, "down")) == {"0", "2", "3"}


# -- a dataset source over an input that is not populated --------------------------------------

async def test_a_dataset_source_over_an_unpopulated_input_never_deletes(tmp_path, write_config, data_file, store_url):
    write_ndjson(data_file, records(6))
    no_guard = {"type": "dataset", "dataset": "out", "circuit_breaker_deletion_factor": None}
    cfg = write_config([file_pipe("up", "data/rows.ndjson"), dataset_pipe("down", "up", sink=no_guard)])
    async with Runtime(cfg, data_dir=tmp_path / "state", store=store_url) as rt:
        await rt.run_all()
    # the pipe now reads a dataset whose writer has never completed a run
    write_config([file_pipe("up", "data/rows.ndjson"), file_pipe("up2", "data/none.ndjson"),
                  dataset_pipe("down", "up2", sink=no_guard)])
    async with Runtime(cfg, data_dir=tmp_path / "state", store=store_url) as rt:
        result = await rt.run_pipe("down", full=True)
        assert (result.status, result.deleted) == ("stopped", 0)
        assert len(live(await visible(rt, "out"))) == 6
        assert (await rt.pipe_state("down")).sweep is not None  # the full run stays owed


# -- disable_set_last_seen pipes stay durable ---------------------------------------------------

async def test_full_runs_of_a_durable_pipe_are_refused_and_the_flag_follows_the_config(
        tmp_path, write_config, data_file,
        store_url):
    write_ndjson(data_file, records(2))
    durable = [file_pipe("rows", "data/rows.ndjson"), dataset_pipe("deltas", "rows", disable_set_last_seen=True)]
    cfg = write_config(durable)
    async with Runtime(cfg, data_dir=tmp_path / "state", store=store_url) as rt:
        await rt.run_all()
        with pytest.raises(OperationRefusedError, match=r"a full run is refused.*disable_set_last_seen"):
            await rt.run_pipe("deltas", full=True)
        with pytest.raises(OperationRefusedError, match="disable_set_last_seen"):
            await rt.run_all(full=True)
        assert [e.event for e in await rt.execution_log("deltas")].count("run-started") == 1
    write_config([file_pipe("rows", "data/rows.ndjson"), dataset_pipe("deltas", "rows")])  # flag removed
    async with Runtime(cfg, data_dir=tmp_path / "state", store=store_url) as rt:
        await rt.reset_pipe("deltas")  # the advice works: refused before, allowed now
        assert (await rt.pipe_state("deltas")).since is None


# -- operator actions never race a running pipe ---------------------------------------------------

SLOW = '''
import time


def slow(entities):
    time.sleep(0.05)
    return entities
'''


async def test_rollback_and_reset_while_the_tripping_run_goes_on_are_refused(tmp_path, write_config, data_file,
        store_url):
    write_ndjson(data_file, records(40))
    sink = {"type": "dataset", "circuit_breaker_threshold_count": 2}
    cfg = write_config([
        file_pipe("up", "data/rows.ndjson"),
        dataset_pipe("down", "up", batch_size=2, sink=sink, transform={"type": "python", "function": "slow_race:slow"}),
    ])
    (cfg / "slow_race.py").write_text(SLOW)
    async with Runtime(cfg, data_dir=tmp_path / "state", store=store_url) as rt:
        await rt.run_all()
        write_ndjson(data_file, records(40, changed=True))
        await rt.run_pipe("up")
        refusals: list[str] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(rt.run_pipe, "down")
            with anyio.fail_after(30):
                while (info := await rt.dataset("down")) is None or info.trip is None:
                    await anyio.sleep(0.01)
            run = rt.running.get("down")
            assert run is not None, "the run ended before the test could act: the window was missed"
            for action in (rt.rollback_breaker("down"), rt.reset_pipe("down", since=0)):
                with pytest.raises(OperationRefusedError, match=f"run {run.result.run_id}") as refused:
                    await action
                refusals.append(str(refused.value))
            assert "down" in rt.running, "the run ended while the test acted: the window was missed"
        assert len(refusals) == 2
        assert (await rt.dataset("down")).trip is not None  # nothing was rolled back under the run
        await rt.rollback_breaker("down")  # allowed once the run is over
        assert all(not e.get("changed") for e in (await visible(rt, "down")).values())


async def test_a_reset_from_another_process_is_refused_while_the_pipe_runs(tmp_path, write_config, data_file,
        store_url):
    from runtime.runtime import reset_pipe

    write_ndjson(data_file, records(2))
    cfg = write_config([file_pipe("rows", "data/rows.ndjson")])
    async with Runtime(cfg, data_dir=tmp_path / "state", store=store_url) as rt:
        other = make_store(store_url, tmp_path / "state")  # the same state, as another process opens it
        await other.open()
        try:
            async with rt.store.pipe_lock("rows", holder="run abc123"):
                with pytest.raises(OperationRefusedError, match="run abc123"):
                    await reset_pipe(other, "rows", None)
        finally:
            await other.close()


# -- compaction never removes a version a consumer has not read ---------------------------------

async def test_compaction_keeps_versions_a_history_consumer_has_not_read(tmp_path, write_config, data_file, store_url):
    write_ndjson(data_file, [{"id": 1, "v": 1}])
    history = {"type": "dataset", "dataset": "up", "include_previous_versions": True}
    cfg = write_config([file_pipe("up", "data/rows.ndjson"),
                        {"_id": "down", "type": "pipe", "source": history,
                         "sink": {"type": "dataset", "dataset": "down"}, "compaction": {"keep_versions": None}}])
    async with Runtime(cfg, data_dir=tmp_path / "state", store=store_url) as rt:
        await rt.run_all()
        for v in (2, 3, 4):  # the upstream changes three times between two runs of its consumer
            write_ndjson(data_file, [{"id": 1, "v": v}])
            await rt.run_pipe("up")
        holds = await rt.store.compaction_holds("up")
        assert holds == [("down", 0)]
        await rt.run_pipe("down")
        assert [e["v"] for e in await rt.entity("down", "1", history=True)] == [1, 2, 3, 4]
        write_ndjson(data_file, [{"id": 1, "v": 5}])
        await rt.run_pipe("up")  # the consumer has read everything: compaction goes on
        assert [e["v"] for e in await rt.entity("up", "1", history=True)] == [4, 5]


async def test_a_disabled_consumer_holds_compaction_too(tmp_path, write_config, data_file, store_url):
    write_ndjson(data_file, [{"id": 1, "v": 1}])
    cfg = write_config([file_pipe("up", "data/rows.ndjson"),
                        dataset_pipe("down", "up", pump={"mode": "off"})])
    async with Runtime(cfg, data_dir=tmp_path / "state", store=store_url) as rt:
        for v in (1, 2, 3, 4):
            write_ndjson(data_file, [{"id": 1, "v": v}])
            await rt.run_pipe("up")
        assert await rt.store.compaction_holds("up") == [("down", -1)]
        assert [e["v"] for e in await rt.entity("up", "1", history=True)] == [1, 2, 3, 4]
        assert (await rt.dataset("up")).compaction_held_by == (("down", -1),)  # shown by `sluice datasets`


async def test_cli_breaker_and_reset_exit_nonzero_naming_the_run_that_holds_the_pipe(
        tmp_path, write_config, data_file):
    import subprocess
    import sys
    from pathlib import Path

    sluice = str(Path(sys.executable).parent / "sluice")
    write_ndjson(data_file, records(10))
    cfg = write_config([file_pipe("rows", "data/rows.ndjson")])
    state = tmp_path / "state"
    async with Runtime(cfg, data_dir=state) as rt:
        await rt.run_pipe("rows")
        write_ndjson(data_file, [])
        assert (await rt.run_pipe("rows")).status == "failed"  # tripped: every deletion held
        async with rt.store.pipe_lock("rows", holder="run 0123abcd4567"):
            for args in (["breaker", "rollback", "rows"], ["reset", "rows"]):
                done = await anyio.to_thread.run_sync(lambda a=args: subprocess.run(
                    [sluice, *a, "--data-dir", str(state)], capture_output=True, text=True, timeout=60))
                assert done.returncode == 1, done
                assert "run 0123abcd4567" in done.stderr + done.stdout
        assert (await rt.dataset("rows")).trip is not None  # nothing happened under the lock
