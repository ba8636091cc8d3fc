"""Pipe runs: checkpoints, failures, deletion tracking, breaker, stop, backpressure."""

from __future__ import annotations

import anyio
import orjson
import pytest

from runtime import OperationRefusedError, PipeRun, Runtime
from runtime.store import make_store
from tests.core.helpers import dataset_pipe, file_pipe, write_ndjson


def records(n: int, **extra) -> list[dict]:
    return [{"id": i, "v": f"value-{i}", **extra} for i in range(n)]


@pytest.fixture
def data_file(tmp_path):
    return tmp_path / "config" / "data" / "rows.ndjson"


async def ids(rt: Runtime, dataset: str, deleted: bool | None = None) -> set[str]:
    found = await rt.entities(dataset, limit=100_000)
    return {e["_id"] for e in found if deleted is None or bool(e.get("_deleted")) == deleted}


async def test_full_runs_track_deletions_and_reruns_are_noops(tmp_path, write_config, data_file, store_url):
    write_ndjson(data_file, records(10))
    cfg = write_config([file_pipe("rows", "data/rows.ndjson")])
    async with Runtime(cfg, data_dir=tmp_path / "state", store=store_url) as rt:
        first = await rt.run_pipe("rows")
        assert (first.kind, first.read, first.new) == ("full", 10, 10)
        second = await rt.run_pipe("rows")
        assert (second.new, second.changed, second.deleted, second.unchanged) == (0, 0, 0, 10)
        write_ndjson(data_file, records(7))
        third = await rt.run_pipe("rows")
        assert third.deleted == 3
        assert await ids(rt, "rows", deleted=True) == {"7", "8", "9"}
        assert len(await ids(rt, "rows", deleted=False)) == 7


async def test_failed_run_commits_nothing_past_its_checkpoint_and_tracks_no_deletions(tmp_path, write_config, data_file,
        store_url):
    write_ndjson(data_file, records(10))
    cfg = write_config([file_pipe("rows", "data/rows.ndjson", batch_size=3)])
    async with Runtime(cfg, data_dir=tmp_path / "state", store=store_url) as rt:
        await rt.run_pipe("rows")
        # record 8 (line 5 of the new file) has no primary key: the run fails mid-file
        bad = records(4) + [{"v": "no id"}] + records(2, extra=True)
        write_ndjson(data_file, bad)
        failed = await rt.run_pipe("rows")
        assert failed.status == "failed"
        assert "rows.ndjson:5" in str(failed.error) and "primary_key" in str(failed.error)
        assert await ids(rt, "rows", deleted=True) == set()  # no deletion tracking after a failure
        log = await rt.execution_log("rows")
        assert log[-1].event == "run-failed" and "rows.ndjson:5" in log[-1].data["error"]
        assert (await rt.pipe_state("rows")).info["last_run"]["status"] == "failed"


async def test_dataset_pipe_is_incremental_and_does_no_deletion_tracking_then(tmp_path, write_config, data_file,
        store_url):
    write_ndjson(data_file, records(5))
    cfg = write_config([file_pipe("rows", "data/rows.ndjson"), dataset_pipe("copy", "rows")])
    async with Runtime(cfg, data_dir=tmp_path / "state", store=store_url) as rt:
        results = await rt.run_all()
        assert [(r.pipe, r.kind, r.new) for r in results] == [("rows", "full", 5), ("copy", "full", 5)]
        assert (await rt.pipe_state("copy")).since == 4
        again = await rt.run_pipe("copy")
        assert (again.kind, again.read) == ("incremental", 0)
        write_ndjson(data_file, records(3) + [{"id": 3, "v": "changed"}, {"id": 4, "v": "value-4"}])
        results = await rt.run_all()
        by_pipe = {r.pipe: r for r in results}
        assert by_pipe["rows"].changed == 1 and by_pipe["copy"].changed == 1
        assert by_pipe["copy"].kind == "incremental" and by_pipe["copy"].read == 1
        write_ndjson(data_file, records(4))  # id 4 disappears: tombstone flows downstream
        await rt.run_all()
        assert await ids(rt, "copy", deleted=True) == {"4"}


async def test_python_transform_and_chained_datasets(tmp_path, write_config, data_file, store_url):
    write_ndjson(data_file, records(3))
    (tmp_path / "config").mkdir(exist_ok=True)
    (tmp_path / "config" / "shout.py").write_text(
        "def upper(es):\n    return [{**e, 'v': e['v'].upper()} for e in es if e['_id'] != '1']\n"
    )
    cfg = write_config(
        [
            dataset_pipe("loud", "rows", transform={"type": "python", "function": "shout:upper"}),
            file_pipe("rows", "data/rows.ndjson"),
        ]
    )
    async with Runtime(cfg, data_dir=tmp_path / "state", store=store_url) as rt:
        assert rt.pipe_ids() == ["rows", "loud"]  # dependency order, not file order
        await rt.run_all()
        assert sorted(e["v"] for e in await rt.entities("loud")) == ["VALUE-0", "VALUE-2"]


async def test_if_source_empty_fail_protects_the_dataset(tmp_path, write_config, data_file, store_url):
    write_ndjson(data_file, records(4))
    pipe = file_pipe("rows", "data/rows.ndjson")
    pipe["source"]["if_source_empty"] = "fail"
    cfg = write_config([pipe])
    async with Runtime(cfg, data_dir=tmp_path / "state", store=store_url) as rt:
        await rt.run_pipe("rows")
        write_ndjson(data_file, [])
        result = await rt.run_pipe("rows")
        assert result.status == "failed" and "if_source_empty" in str(result.error)
        assert len(await ids(rt, "rows", deleted=False)) == 4


async def test_circuit_breaker_trips_blocks_the_pipe_and_rolls_back(tmp_path, write_config, data_file, store_url):
    write_ndjson(data_file, records(10))
    pipe = file_pipe("rows", "data/rows.ndjson", sink={"type": "dataset", "circuit_breaker_threshold_count": 2})
    cfg = write_config([pipe])
    async with Runtime(cfg, data_dir=tmp_path / "state", store=store_url) as rt:
        assert (await rt.run_pipe("rows")).new == 10  # not populated yet: breaker inactive
        write_ndjson(data_file, [])  # the sporadic empty response
        tripped = await rt.run_pipe("rows")
        assert tripped.status == "failed" and "tripped" in str(tripped.error)
        assert await ids(rt, "rows", deleted=True) == set()  # all or nothing: every tombstone held
        blocked = await rt.run_pipe("rows")
        assert blocked.status == "failed" and "breaker commit" in str(blocked.error)
        assert await rt.rollback_breaker("rows") == 10
        write_ndjson(data_file, records(10))
        healed = await rt.run_pipe("rows")
        assert healed.status == "completed"
        assert await ids(rt, "rows", deleted=True) == set() and len(await ids(rt, "rows")) == 10
        events = [e.event for e in await rt.execution_log("rows")]
        assert "circuit-breaker-rollback" in events


async def test_circuit_breaker_commit_exposes_the_run(tmp_path, write_config, data_file, store_url):
    write_ndjson(data_file, records(10))
    pipe = file_pipe("rows", "data/rows.ndjson", sink={"type": "dataset", "circuit_breaker_threshold_factor": 0.1})
    cfg = write_config([pipe])
    async with Runtime(cfg, data_dir=tmp_path / "state", store=store_url) as rt:
        await rt.run_pipe("rows")
        write_ndjson(data_file, records(10, changed=True))
        assert (await rt.run_pipe("rows")).status == "failed"
        assert await rt.commit_breaker("rows") == 9
        assert all(e.get("changed") for e in await rt.entities("rows"))
        assert (await rt.run_pipe("rows")).status == "completed"


async def test_disable_set_last_seen_refuses_reset(tmp_path, write_config, data_file, store_url):
    write_ndjson(data_file, records(2))
    cfg = write_config(
        [file_pipe("rows", "data/rows.ndjson"), dataset_pipe("deltas", "rows", disable_set_last_seen=True)]
    )
    async with Runtime(cfg, data_dir=tmp_path / "state", store=store_url) as rt:
        await rt.run_all()
        with pytest.raises(OperationRefusedError, match="disable_set_last_seen"):
            await rt.reset_pipe("deltas")
        await rt.reset_pipe("rows", since=None)
        assert (await rt.pipe_state("deltas")).since == 1


async def test_stop_request_commits_what_was_read_and_resumes(tmp_path, write_config, data_file, store_url):
    write_ndjson(data_file, records(2000))
    cfg = write_config(
        [file_pipe("rows", "data/rows.ndjson", batch_size=100), dataset_pipe("copy", "rows", batch_size=100)]
    )
    async with Runtime(cfg, data_dir=tmp_path / "state", store=store_url) as rt:
        await rt.run_pipe("rows")
        spec = rt.config.pipes["copy"]
        run = PipeRun(spec, rt.store, config_dir=str(cfg))
        seen: list[int] = []

        def progress(result):
            seen.append(result.read)
            if result.read >= 300:
                run.stop()

        run.on_progress = progress
        stopped = await run.run()
        assert stopped.status == "stopped" and 300 <= stopped.read < 2000
        since = (await rt.pipe_state("copy")).since
        assert since == stopped.read - 1  # the committed checkpoint matches what was written
        resumed = await rt.run_pipe("copy")
        assert resumed.kind == "full" and resumed.read == 2000 - stopped.read
        assert len(await ids(rt, "copy")) == 2000


async def test_mailboxes_are_bounded_under_a_slow_sink(tmp_path, write_config, data_file, store_url):
    write_ndjson(data_file, records(3000))
    cfg = write_config([file_pipe("rows", "data/rows.ndjson", batch_size=50, sink={"type": "null"})])
    async with Runtime(cfg, data_dir=tmp_path / "state", store=store_url) as rt:
        run = PipeRun(rt.config.pipes["rows"], rt.store, config_dir=str(cfg))
        from connectors.dataset import NullSink

        original = NullSink.write

        async def slow(self, entities):
            await anyio.sleep(0.002)
            return await original(self, entities)

        NullSink.write = slow
        try:
            result = await run.run()
        finally:
            NullSink.write = original
        stats = run.mailbox_statistics()
        assert result.read == 3000 and stats[0].sent == 60
        assert stats[0].peak <= stats[0].capacity
        assert stats[0].peak == stats[0].capacity  # the source really was held back


async def test_run_refuses_pipe_with_mode_off_and_unknown_pipe(tmp_path, write_config, data_file, store_url):
    write_ndjson(data_file, records(1))
    cfg = write_config([file_pipe("rows", "data/rows.ndjson", pump={"mode": "off"})])
    async with Runtime(cfg, data_dir=tmp_path / "state", store=store_url) as rt:
        with pytest.raises(OperationRefusedError, match="off"):
            await rt.run_pipe("rows")
        with pytest.raises(OperationRefusedError, match="no pipe"):
            await rt.run_pipe("nope")
        assert await rt.run_all() == []


async def test_failing_transform_cancels_the_run_before_deletion_tracking(tmp_path, write_config, data_file, store_url):
    write_ndjson(data_file, records(10))
    (tmp_path / "config").mkdir(exist_ok=True)
    (tmp_path / "config" / "boom.py").write_text(
        "def second_batch_fails(es):\n"
        "    if any(e['_id'] == '6' for e in es):\n"
        "        raise RuntimeError('boom on 6')\n"
        "    return es\n"
    )
    cfg = write_config(
        [
            file_pipe(
                "rows",
                "data/rows.ndjson",
                batch_size=3,
                transform={"type": "python", "function": "boom:second_batch_fails"},
            )
        ]
    )
    async with Runtime(cfg, data_dir=tmp_path / "state", store=store_url) as rt:
        write_ndjson(data_file, records(5))
        assert (await rt.run_pipe("rows")).new == 5
        write_ndjson(data_file, records(8))  # contains id 6: the transform fails mid-run
        result = await rt.run_pipe("rows")
        assert result.status == "failed"
        assert "transform (PythonTransform) failed: RuntimeError: boom on 6" in str(result.error)
        assert await ids(rt, "rows", deleted=True) == set()


async def test_batches_are_cut_by_bytes_as_well_as_count(tmp_path, write_config, data_file, store_url):
    write_ndjson(data_file, [{"id": i, "blob": "x" * 3000} for i in range(40)])
    cfg = write_config([file_pipe("rows", "data/rows.ndjson", max_batch_bytes=10_000)])
    async with Runtime(cfg, data_dir=tmp_path / "state", store=store_url) as rt:
        run = PipeRun(rt.config.pipes["rows"], rt.store, config_dir=str(cfg))
        result = await run.run()
        assert result.new == 40
        assert run.mailbox_statistics()[0].sent == 10  # 4 entities of ~3 KB reach 10 KB


async def test_two_runs_of_one_pipe_never_overlap(tmp_path, write_config, data_file, store_url):
    write_ndjson(data_file, records(3000))
    cfg = write_config([file_pipe("rows", "data/rows.ndjson")])
    async with Runtime(cfg, data_dir=tmp_path / "state", store=store_url) as rt:
        await rt.run_pipe("rows")
        outcomes = await _gather(rt.run_pipe("rows"), rt.run_pipe("rows"))
        assert sorted(type(o).__name__ for o in outcomes) == ["OperationRefusedError", "RunResult"]
        assert await ids(rt, "rows", deleted=True) == set()
        # another process (here: another store object on the same file) is refused too
        other = make_store(store_url, tmp_path / "state")  # the same state, as another process opens it
        async with other.pipe_lock("rows"):
            with pytest.raises(OperationRefusedError, match="already running"):
                await rt.run_pipe("rows")
        assert (await rt.run_pipe("rows")).ok
        assert (await rt.pipe_state("rows")).info["runs"] == 3


async def _gather(*coros):
    results: list = [None] * len(coros)

    async def one(i, coro):
        try:
            results[i] = await coro
        except OperationRefusedError as exc:
            results[i] = exc

    async with anyio.create_task_group() as tg:
        for i, coro in enumerate(coros):
            tg.start_soon(one, i, coro)
    return results


async def test_byte_budget_holds_for_mixed_entity_sizes(tmp_path, write_config, data_file, store_url):
    # every 16th entity small, the others ~20 KB: no estimate from a sample, real sizes
    write_ndjson(data_file, [{"id": i, "blob": "" if i % 16 == 0 else "x" * 20_000} for i in range(64)])
    cfg = write_config([file_pipe("rows", "data/rows.ndjson", max_batch_bytes=50_000, sink={"type": "null"})])
    async with Runtime(cfg, data_dir=tmp_path / "state", store=store_url) as rt:
        run = PipeRun(rt.config.pipes["rows"], rt.store, config_dir=str(cfg))
        seen: list[int] = []
        original = run._emit

        async def spy(outbox, entities, *args):
            seen.append(sum(len(orjson.dumps(e)) for e in entities))
            return await original(outbox, entities, *args)

        run._emit = spy
        assert (await run.run()).read == 64
        assert max(seen) < 50_000 + 20_100  # at most one entity past the budget


def test_a_cycle_does_not_disturb_the_order_of_other_pipes(write_config):
    from runtime import load_config
    from runtime.plugins import default_registry

    cfg = write_config([
        dataset_pipe("down", "up"),
        {"_id": "up", "type": "pipe", "source": {"type": "embedded", "entities": []}},
        dataset_pipe("x", "y"),
        dataset_pipe("y", "x"),
    ])
    order = list(load_config(cfg, default_registry()).pipes)
    assert order.index("up") < order.index("down")
    assert sorted(order) == ["down", "up", "x", "y"]
