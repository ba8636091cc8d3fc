"""The ``dtl`` transform through real pipe runs (embedded source -> dtl -> dataset sink, SQLite
store): outputs, filter as deletion, discard, create, children tracking and emit_children, fail!
and trip!, and compile errors through `sluice check` with the pipe and key path."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner

from runtime import DtlFailError, DtlTripError, PipeTrippedError, Runtime
from runtime.cli.main import cli

COPY = ["copy", "*"]


def dtl_pipe(entities: list[dict], rules: dict, **transform) -> dict:
    return {"_id": "out", "type": "pipe", "source": {"type": "embedded", "entities": entities},
            "transform": {"type": "dtl", "rules": rules, **transform}}


async def latest(rt: Runtime, dataset: str = "out") -> dict[str, dict]:
    found = await rt.entities(dataset, limit=10_000)
    return {e["_id"]: {k: v for k, v in e.items() if not k.startswith("_") or k == "_deleted"}
            for e in found}


async def test_outputs_go_on_filter_deletes_discard_drops_create_adds(tmp_path, write_config):
    rules = {"default": [COPY, ["add", "n2", ["*", "_S.n", 2]],
                         ["discard", ["neq", "_S.kind", "drop"]],
                         ["filter", ["neq", "_S.kind", "gone"]],
                         ["create", ["dict", "_id", ["concat", "_S._id", "-extra"]]]]}
    first = [{"_id": "a", "n": 1}, {"_id": "b", "n": 2}, {"_id": "c", "n": 3}]
    cfg = write_config([dtl_pipe(first, rules)])
    async with Runtime(cfg, data_dir=tmp_path / "state") as rt:
        await rt.run_pipe("out")
        assert (await latest(rt))["a"] == {"n": 1, "n2": 2}
        assert set(await latest(rt)) == {"a", "b", "c", "a-extra", "b-extra", "c-extra"}
    second = [{"_id": "a", "n": 1, "kind": "gone"}, {"_id": "b", "n": 2, "kind": "drop"},
              {"_id": "c", "n": 3}, {"_id": "d", "n": 4, "kind": "drop"}]
    cfg = write_config([dtl_pipe(second, rules)])
    async with Runtime(cfg, data_dir=tmp_path / "state") as rt:
        await rt.run_pipe("out")
        now = await latest(rt)
    assert now["a"] == {"n": 1, "kind": "gone", "n2": 2, "_deleted": True}  # filter: deleted
    assert "d" not in now  # discard: never written
    assert now["c"] == {"n": 3, "n2": 6}


CHILDREN = {"default": [["copy", "_id"],
                        ["create-child", ["apply", "line", "_S.lines"]]],
            "line": [["add", "_id", ["concat", "_P._S._id", ":", ["string", "_S.no"]]], ["add", "qty", "_S.qty"]]}


async def run_orders(tmp_path, write_config, orders: list[dict], **transform) -> dict[str, dict]:
    cfg = write_config([dtl_pipe(orders, CHILDREN, **transform)])
    async with Runtime(cfg, data_dir=tmp_path / "state") as rt:
        result = await rt.run_pipe("out")
        assert result.status == "completed", result.error
        return await latest(rt)


async def test_a_removed_child_is_deleted_in_the_parent_children(tmp_path, write_config):
    order = {"_id": "o1", "lines": [{"no": 1, "qty": 5}, {"no": 2, "qty": 7}]}
    await run_orders(tmp_path, write_config, [order])
    order["lines"] = [{"no": 2, "qty": 8}]
    now = await run_orders(tmp_path, write_config, [order])
    assert now["o1"]["$children"] == [{"_id": "o1:2", "qty": 8}, {"_id": "o1:1", "_deleted": True}]
    # the tombstone is not carried on: the next version diffs against the live children only
    now = await run_orders(tmp_path, write_config, [order])
    assert now["o1"]["$children"] == [{"_id": "o1:2", "qty": 8}]


async def test_emit_children_emits_them_and_deletes_removed_ones(tmp_path, write_config):
    order = {"_id": "o1", "lines": [{"no": 1, "qty": 5}, {"no": 2, "qty": 7}]}
    now = await run_orders(tmp_path, write_config, [order], emit_children=True)
    assert now["o1:1"] == {"qty": 5, "$parent": "o1"}
    assert now["o1"]["$children"] == ["o1:1", "o1:2"]
    order["lines"] = [{"no": 2, "qty": 7}, {"no": 3, "qty": 1}]
    now = await run_orders(tmp_path, write_config, [order], emit_children=True)
    assert now["o1:1"] == {"$parent": "o1", "_deleted": True}
    assert now["o1:3"] == {"qty": 1, "$parent": "o1"} and "_deleted" not in now["o1:2"]


async def test_a_filtered_parent_deletes_its_children(tmp_path, write_config):
    order = {"_id": "o1", "lines": [{"no": 1, "qty": 5}]}
    rules = {**CHILDREN, "default": [["copy", "_id"], ["filter", ["neq", "_S.cancelled", True]],
                                     *CHILDREN["default"][1:]]}
    for o in (order, {**order, "cancelled": True}):
        cfg = write_config([dtl_pipe([o], rules, emit_children=True)])
        async with Runtime(cfg, data_dir=tmp_path / "state") as rt:
            await rt.run_pipe("out")
            now = await latest(rt)
    assert now["o1:1"]["_deleted"] is True and now["o1"]["_deleted"] is True


async def test_fail_and_trip_fail_the_run_naming_the_entity(tmp_path, write_config):
    for name, error in (("fail!", DtlFailError), ("trip!", DtlTripError)):
        rules = {"default": [COPY, ["if", ["eq", "_S._id", "b"], [name, "bad b"]]]}
        cfg = write_config([dtl_pipe([{"_id": "a"}, {"_id": "b"}], rules)])
        async with Runtime(cfg, data_dir=tmp_path / name) as rt:
            result = await rt.run_pipe("out")
            assert result.status == "failed"
            assert isinstance(result.error, error) and result.error.entity_id == "b"
            assert "'b'" in str(result.error) and "bad b" in str(result.error)
            # trip! stops the pipe: a tripped pipe's error, which the pump does not retry
            assert isinstance(result.error, PipeTrippedError) == (name == "trip!")
            assert await latest(rt) == {}  # nothing of the failed run is committed


async def test_an_output_without_id_fails_naming_the_entity(tmp_path, write_config):
    cfg = write_config([dtl_pipe([{"_id": "a", "x": 1}], {"default": [["add", "x", "_S.x"]]})])
    async with Runtime(cfg, data_dir=tmp_path / "state") as rt:
        result = await rt.run_pipe("out")
    assert result.status == "failed" and "no '_id'" in str(result.error) and "'a'" in str(result.error)


def test_sluice_check_reports_every_compile_error_with_pipe_and_key(tmp_path: Path) -> None:
    rules = {"default": [COPY, ["add", "x", 1], ["add", "y", 2], ["add", "z", ["concatt", "_S.a"]]],
             "other": [["addd", "x", 1]]}
    root = tmp_path / "config"
    root.mkdir()
    (root / "pipes.yaml").write_text(yaml.safe_dump([dtl_pipe([{"_id": "a"}], rules)]))
    result = CliRunner().invoke(cli, ["check", str(root)])
    assert result.exit_code == 2, result.output
    assert "pipes.yaml: out: transform.rules.default[3][2]: unknown function 'concatt'" in result.output
    assert "out: transform.rules.other[0]: unknown transform 'addd'" in result.output


def test_emit_children_without_create_child_is_a_config_problem(tmp_path: Path) -> None:
    root = tmp_path / "config"
    root.mkdir()
    pipe = dtl_pipe([{"_id": "a"}], {"default": [COPY]}, emit_children=True)
    (root / "pipes.yaml").write_text(yaml.safe_dump([pipe]))
    result = CliRunner().invoke(cli, ["check", str(root)])
    assert result.exit_code == 2
    assert "out: transform.emit_children: the rules have no 'create-child'" in result.output


async def test_a_dtl_transform_with_hops_joins_through_the_store_index(tmp_path, write_config):
    from runtime import Runtime
    from tests.core.helpers import file_pipe, write_ndjson

    data = tmp_path / "config" / "data"
    write_ndjson(data / "customers.ndjson", [{"id": "c1", "address_id": "a1"}, {"id": "c2", "address_id": None},
                                             {"id": "c3", "address_id": ["a1", "a2"]}])
    write_ndjson(data / "addresses.ndjson", [{"id": "a1", "city": "Oslo"}, {"id": "a2", "city": "Bergen"}])
    rules = {"default": [["copy", "_id"], ["add", "cities", ["hops", {
        "datasets": ["addresses a"], "where": [["eq", "_S.address_id", "a._id"]], "return": "a.city"}]]]}
    enriched = {"_id": "enriched", "type": "pipe", "source": {"type": "dataset", "dataset": "customers"},
                "transform": {"type": "dtl", "rules": rules}}
    cfg = write_config([enriched, file_pipe("customers", "data/customers.ndjson"),
                        file_pipe("addresses", "data/addresses.ndjson")])
    async with Runtime(cfg, data_dir=tmp_path / "state") as rt:
        assert rt.pipe_ids()[-1] == "enriched"  # after the pipes writing what it reads and hops to
        results = await rt.run_all()
        assert all(r.ok for r in results), [r.error for r in results]
        got = {e["_id"]: e.get("cities") for e in await rt.entities("enriched")}
        assert got["c1"] in ("Oslo", ["Oslo"]) and got["c2"] in (None, []) and sorted(got["c3"]) == ["Bergen", "Oslo"]


async def test_a_pipe_does_not_run_before_the_datasets_it_hops_to_are_populated(tmp_path, write_config):
    """Sesam: joins against a dataset whose writer has not completed a run would write outputs
    missing what is still to come (and an untracked hop would keep them)."""
    from tests.core.helpers import file_pipe, write_ndjson

    data = tmp_path / "config" / "data"
    write_ndjson(data / "customers.ndjson", [{"id": "c1", "address_id": "a1"}])
    write_ndjson(data / "addresses.ndjson", [{"id": "a1", "city": "Oslo"}])
    rules = {"default": [["copy", "_id"], ["add", "city", ["hops", {
        "datasets": ["addresses a"], "where": [["eq", "_S.address_id", "a._id"]], "return": "a.city",
        "track-dependencies": False}]]]}
    enriched = {"_id": "enriched", "type": "pipe", "source": {"type": "dataset", "dataset": "customers"},
                "transform": {"type": "dtl", "rules": rules}}
    cfg = write_config([enriched, file_pipe("customers", "data/customers.ndjson"),
                        file_pipe("addresses", "data/addresses.ndjson")])
    async with Runtime(cfg, data_dir=tmp_path / "state") as rt:
        assert (await rt.run_pipe("customers")).ok
        # addresses holds a1, but its writer has not completed a run: not populated
        await rt.store.write_batch("addresses", [{"_id": "a1", "city": "Bergen"}], pipe="other", checkpoint=None)
        early = await rt.run_pipe("enriched")
        assert early.status == "stopped" and early.read == 0
        assert await rt.entities("enriched") == [] and (await rt.pipe_state("enriched")).since is None
        assert (await rt.run_pipe("addresses")).ok
        assert (await rt.run_pipe("enriched")).status == "completed"
        assert [e["city"] for e in await rt.entities("enriched")] == [["Oslo"]]


async def test_require_populated_false_lets_a_hop_run_before_its_dataset_is_populated(tmp_path, write_config):
    """For cycles such as a share pattern's collect hopping back to the insert pipe's responses."""
    rules = {"default": [["copy", "_id"], ["add", "city", ["hops", {
        "datasets": ["addresses a"], "where": [["eq", "_S.address_id", "a._id"]], "return": "a.city",
        "require-populated": False}]]]}
    pipe = dtl_pipe([{"_id": "c1", "address_id": "a1"}], rules)
    async with Runtime(write_config([pipe]), data_dir=tmp_path / "state") as rt:
        assert (await rt.run_pipe("out")).status == "completed"
        assert (await latest(rt))["c1"] == {"city": []}
