"""One test per Sesam collect pattern (sesam.md §8), each checking the dataset against the test
API's ground truth after a sequence of inserts, updates, deletes and empty responses."""

from __future__ import annotations

import pytest

from runtime import OperationRefusedError, PipeTrippedError, SourceEmptyError
from tests.rest.conftest import collect_pipe, ids, runtime, system, truth
from tests.servers.faulty_api import FaultyApi

SINCE = {"supports_since": True, "is_chronological": True, "updated_expression": "{{ updated }}"}


def same(dataset: dict, api: FaultyApi) -> bool:
    return {k: (v["name"], v["value"]) for k, v in dataset.items()} == {
        k: (v["name"], v["value"]) for k, v in truth(api).items()}


async def test_since_without_deletions_with_full_and_partial_rescans(api: FaultyApi, write_config, tmp_path) -> None:
    pipe = collect_pipe(**SINCE)
    pipe["pump"] = {"rescan_run_count": 4, "partial_rescan_run_count": 3, "partial_rescan_delta": 3}
    cfg = write_config([system(api.url), pipe])
    async with runtime(cfg, tmp_path) as rt:
        first = await rt.run_pipe("items")
        assert first.kind == "full" and same(await ids(rt, "items"), api)
        api.upsert("i01", name="changed", value=101)
        api.delete("i02")
        api.upsert("n1", name="new", value=1)
        second = await rt.run_pipe("items")
        got = await ids(rt, "items")
        assert second.kind == "incremental" and second.read == 2
        assert got["i01"]["name"] == "changed" and "n1" in got
        assert "i02" in got  # the API never reports deletes: an incremental run cannot see it
        # a late-arriving row: committed in the source with an older "updated" than the since
        api.clock += 1
        api.items["late"] = {"id": "late", "name": "late", "value": 0, "updated": api.clock - 1}
        api.upsert("n2", name="new 2", value=2)
        api._sorted = None
        third = await rt.run_pipe("items")
        assert third.kind == "partial"  # since moved back by 3: the late row is picked up
        got = await ids(rt, "items")
        assert "late" in got and "n2" in got and "i02" in got
        for _ in range(3):  # rescan_run_count 4: a full rescan comes within the next runs
            run = await rt.run_pipe("items")
            if run.kind == "full":
                break
            assert run.deleted == 0 and "i02" in await ids(rt, "items")
        assert run.kind == "full" and run.deleted == 1  # the full rescan finds the delete
        assert same(await ids(rt, "items"), api)


async def test_delta_stream_is_durable(api: FaultyApi, write_config, tmp_path) -> None:
    pipe = {
        "_id": "events", "type": "pipe", "disable_set_last_seen": True,
        "compaction": {"keep_versions": None},
        "source": {"type": "rest", "system": "api", "url": "/changes", "params": {"limit": "1000"},
                   "payload_property": "data", "id_expression": "{{ id }}",
                   "deleted_expression": "{{ deleted is defined and deleted }}", **SINCE},
        "sink": {"type": "dataset", "deletion_tracking": False},
    }
    cfg = write_config([system(api.url), pipe])
    async with runtime(cfg, tmp_path) as rt:
        assert (await rt.run_pipe("events")).read == 25
        api.upsert("i05", name="v2", value=5)
        api.delete("i06")
        api.upsert("n1", name="new", value=1)
        assert (await rt.run_pipe("events")).read == 3
        got = await ids(rt, "events")
        assert {k: v["name"] for k, v in got.items()} == {k: v["name"] for k, v in truth(api).items()}
        with pytest.raises(OperationRefusedError, match="disable_set_last_seen"):
            await rt.reset_pipe("events")
        # a full run would replay the stream on top of the current versions: refused like a reset
        with pytest.raises(OperationRefusedError, match=r"a full run is refused.*disable_set_last_seen"):
            await rt.run_pipe("events", full=True)
        assert set(await ids(rt, "events")) == set(truth(api))
        history = await rt.entity("events", "i05", history=True)
        assert [v["name"] for v in history] == ["item 5", "v2"]


async def test_sporadic_empty_response_and_circuit_breaker(api: FaultyApi, write_config, tmp_path) -> None:
    pipe = collect_pipe(if_source_empty="fail")
    pipe["sink"] = {"type": "dataset", "circuit_breaker_threshold_count": 5}
    cfg = write_config([system(api.url), pipe])
    async with runtime(cfg, tmp_path) as rt:
        assert (await rt.run_pipe("items")).ok
        # 1. the whole response is empty: if_source_empty fails the run, nothing is deleted
        api.faults.append({"empty": True, "path": "/items"})
        empty = await rt.run_pipe("items")
        assert isinstance(empty.error, SourceEmptyError) and same(await ids(rt, "items"), api)
        # 2. a sporadic empty page mid-run: 15 apparent deletes trip the breaker; rolled back
        api.faults.append({"empty": True, "path": "/items", "query": "page=2"})
        tripped = await rt.run_pipe("items")
        assert isinstance(tripped.error, PipeTrippedError)
        assert len(await ids(rt, "items")) >= 25 - 5  # at most the limit became visible (DESIGN.md)
        refused = await rt.run_pipe("items")
        assert isinstance(refused.error, PipeTrippedError)  # no run until resolved
        assert await rt.rollback_breaker("items") > 0
        assert (await rt.run_pipe("items")).ok  # the next clean run repairs what became visible
        assert same(await ids(rt, "items"), api)
        # 3. real deletes below the limit go through
        for n in (1, 2, 3):
            api.delete(f"i{n:02}")
        assert (await rt.run_pipe("items")).deleted == 3 and same(await ids(rt, "items"), api)
        # 4. a real mass delete trips the breaker; the operator commits it
        for n in range(10, 20):
            api.delete(f"i{n:02}")
        assert isinstance((await rt.run_pipe("items")).error, PipeTrippedError)
        await rt.commit_breaker("items")
        assert same(await ids(rt, "items"), api)
        assert (await rt.run_pipe("items")).ok


async def test_parameterized_input_with_rest_transform(api: FaultyApi, write_config, tmp_path) -> None:
    ids_pipe = collect_pipe("item-ids")
    lookup = {
        "_id": "item-details", "type": "pipe", "batch_size": 10,
        "source": {"type": "dataset", "dataset": "item-ids"},
        "transform": {"type": "rest", "system": "api", "url": "/items/{{ entity.id }}", "concurrency": 4,
                      "response_property": "detail", "response_status_property": "status",
                      "response_headers_property": "headers", "ignored_status_codes": "404"},
    }
    api.latency = 0.01
    cfg = write_config([system(api.url, concurrency=8), ids_pipe, lookup])
    async with runtime(cfg, tmp_path) as rt:
        assert all(r.ok for r in await rt.run_all())
        details = await rt.entities("item-details", limit=1000)
        assert [e["_id"] for e in details] == sorted(api.items)  # order of the input kept
        assert 1 < api.max_in_flight <= 4
        assert details[0]["status"] == 200 and details[0]["headers"]["X-Item-Version"]
        api.upsert("i04", name="changed", value=4)
        api.delete("i07")
        api.upsert("n1", name="new", value=1)
        assert all(r.ok for r in await rt.run_all())
        got = await ids(rt, "item-details")
        assert {k: v["detail"] for k, v in got.items()} == truth(api)


async def test_rest_transform_status_codes_replace_and_empty(api: FaultyApi, write_config, tmp_path) -> None:
    source = {"type": "embedded", "entities": [{"_id": "a", "id": "i01"}, {"_id": "b", "id": "gone"}]}
    call = {"type": "rest", "system": "api", "url": "/items/{{ entity.id }}"}
    pipes = [
        {"_id": "strict", "type": "pipe", "source": source, "transform": call},
        {"_id": "replace", "type": "pipe", "source": source,
         "transform": {**call, "replace_entity": True, "id_expression": "{{ id }}", "ignored_status_codes": "404"}},
        {"_id": "empty", "type": "pipe", "source": {**source, "entities": source["entities"][1:]},
         "transform": {**call, "ignored_status_codes": "404", "if_transform_empty": "fail"}},
        {"_id": "allowed", "type": "pipe", "source": source,
         "transform": {**call, "allowed_status_codes": "200-299,404", "response_status_property": "s"}},
    ]
    cfg = write_config([system(api.url), *pipes])
    async with runtime(cfg, tmp_path) as rt:
        strict = await rt.run_pipe("strict")
        assert strict.status == "failed" and "HTTP 404" in str(strict.error) and "/items/gone" in str(strict.error)
        assert (await rt.run_pipe("replace")).ok
        assert [e["_id"] for e in await rt.entities("replace")] == ["i01"]
        assert isinstance((await rt.run_pipe("empty")).error, SourceEmptyError)
        assert (await rt.run_pipe("allowed")).ok
        assert {e["_id"]: e["s"] for e in await rt.entities("allowed")} == {"a": 200, "b": 404}


async def test_best_effort_history(api: FaultyApi, write_config, tmp_path) -> None:
    keep_all = collect_pipe("history")
    keep_all["compaction"] = {"keep_versions": None}
    per_version = collect_pipe("versions", id_expression="{{ id }}:{{ updated }}")
    per_version["sink"] = {"type": "dataset", "deletion_tracking": False}
    cfg = write_config([system(api.url), keep_all, per_version])
    async with runtime(cfg, tmp_path) as rt:
        for name in ("item 1", "b", "c", "d"):
            if name != "item 1":
                api.upsert("i01", name=name, value=1)
            assert all(r.ok for r in await rt.run_all())
        api.delete("i01")
        assert all(r.ok for r in await rt.run_all())
        history = await rt.entity("history", "i01", history=True)
        assert [v.get("name") for v in history] == ["item 1", "b", "c", "d", "d"]
        assert history[-1]["_deleted"] is True
        versions = [e for e in await rt.entities("versions", limit=1000) if e["_id"].startswith("i01:")]
        assert [v["name"] for v in versions] == ["item 1", "b", "c", "d"]


async def test_raw_collect_then_reshape(api: FaultyApi, write_config, tmp_path) -> None:
    cfg_dir = write_config([])
    (cfg_dir / "rest_reshape_mod.py").write_text(
        "def reshape(entities):\n"
        "    return [{'_id': e['_id'], 'label': e['name'].upper()}\n"
        "            | ({'_deleted': True} if e.get('_deleted') else {})\n"
        "            for e in entities]\n")
    raw = collect_pipe("items-raw")
    shaped = {"_id": "items", "type": "pipe", "source": {"type": "dataset", "dataset": "items-raw"},
              "transform": {"type": "python", "function": "rest_reshape_mod:reshape"}}
    cfg = write_config([system(api.url), raw, shaped])
    async with runtime(cfg, tmp_path) as rt:
        assert all(r.ok for r in await rt.run_all())
        for e in await rt.entities("items-raw"):
            assert {k: v for k, v in e.items() if not k.startswith("_")} == api.items[e["_id"]]  # unmodified
        again = await rt.run_pipe("items-raw")
        assert again.read == 25 and again.changes == 0  # an unchanged re-pull writes nothing
        api.upsert("i09", name="nine", value=9)
        api.delete("i10")
        assert all(r.ok for r in await rt.run_all())
        assert {k: v["label"] for k, v in (await ids(rt, "items")).items()} == {
            k: v["name"].upper() for k, v in api.items.items()}
