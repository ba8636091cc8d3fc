"""The ``merge`` source (Sesam) through real pipe runs over real datasets in a SQLite store: file
pipes write the inputs ``crm``, ``erp`` and ``hr``; a merge pipe merges them into its dataset.

The oracle for incremental runs is the same merge pipe run from scratch (a full run): after
every step of a random sequence of changes the incrementally run pipe must hold exactly the live
entities the full run gives."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from connectors._merging import composite_id
from runtime import Runtime
from runtime.errors import SourceEmptyError
from tests.core.helpers import file_pipe, write_ndjson

INPUTS = ("crm", "erp", "hr")
TWO = {"datasets": ["crm c", "erp e"], "equality": [["eq", "c.email", "e.mail"]]}
THREE = {"datasets": ["crm c", "erp e", "hr h"],
         "equality": [["eq", "c.email", "e.mail"], ["eq", "e.phone", "h.phone"]]}


def merge_pipe(pid: str, source: dict[str, Any], **sink: Any) -> dict[str, Any]:
    return {"_id": pid, "type": "pipe", "source": {"type": "merge", **source},
            "sink": {"type": "dataset", **sink}}


class Inputs:
    """The records of each input dataset's file, written before each writer runs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data: dict[str, dict[str, dict[str, Any]]] = {n: {} for n in INPUTS}

    def put(self, dataset: str, rid: str, **props: Any) -> None:
        self.data[dataset][rid] = {"id": rid, **props}

    def write(self) -> None:
        for name, records in self.data.items():
            write_ndjson(self.root / f"{name}.ndjson", sorted(records.values(), key=lambda r: r["id"]))


def config(write_config, inputs: Inputs, *pipes: dict[str, Any]) -> Path:
    inputs.write()
    writers = [file_pipe(n, f"data/{n}.ndjson", sink={"type": "dataset", "circuit_breaker_deletion_factor": None})
               for n in INPUTS]
    return write_config([*writers, *pipes])


async def run_ok(rt: Runtime, pipe: str, *, full: bool = False):
    result = await rt.run_pipe(pipe, full=full)
    assert result.ok, result.error
    return result


async def write_inputs(rt: Runtime, inputs: Inputs) -> None:
    inputs.write()
    for name in INPUTS:
        await run_ok(rt, name)


async def live(rt: Runtime, dataset: str) -> dict[str, dict[str, Any]]:
    found = await rt.entities(dataset, limit=100_000)
    return {e["_id"]: {k: v for k, v in e.items() if not k.startswith("_")}
            for e in found if not e.get("_deleted")}


async def latest(rt: Runtime, dataset: str, eid: str) -> dict[str, Any]:
    return (await rt.entity(dataset, eid))[-1]


@pytest.fixture
def inputs(tmp_path: Path) -> Inputs:
    return Inputs(tmp_path / "config" / "data")


async def test_two_datasets_merge_on_an_equality_rule(tmp_path, write_config, inputs):
    inputs.put("crm", "c1", email="a@x", name="Ann")
    inputs.put("crm", "c2", email="b@x", name="Bob")
    inputs.put("erp", "e1", mail="a@x", name="Ann B.")
    inputs.put("erp", "e3", mail="z@x")
    cfg = config(write_config, inputs, merge_pipe("merged", TWO))
    async with Runtime(cfg, data_dir=tmp_path / "state") as rt:
        await write_inputs(rt, inputs)
        await run_ok(rt, "merged")
        got = await live(rt, "merged")
    assert got == {
        # composite identity: the member ids in dataset order; a property with different values
        # gets the list of them in member order
        "c1|e1": {"$ids": ["~:c1", "~:e1"], "id": ["c1", "e1"], "email": "a@x", "mail": "a@x",
                  "name": ["Ann", "Ann B."]},
        "c2": {"$ids": ["~:c2"], "id": "c2", "email": "b@x", "name": "Bob"},
        "e3": {"$ids": ["~:e3"], "id": "e3", "mail": "z@x"},
    }


async def test_three_datasets_merge_transitively_with_identity_first(tmp_path, write_config, inputs):
    inputs.put("crm", "c1", email="a@x")
    inputs.put("erp", "e1", mail="a@x", phone=[1, 2])  # a list joins by any member
    inputs.put("erp", "e2", mail="q@x", phone=3)
    inputs.put("hr", "h1", phone=2)
    inputs.put("hr", "h2", phone=2.0)  # DTL eq: 2 and 2.0 join
    inputs.put("hr", "h3", phone="3")  # the string "3" does not join 3
    cfg = config(write_config, inputs, merge_pipe("merged", {**THREE, "identity": "first"}))
    async with Runtime(cfg, data_dir=tmp_path / "state") as rt:
        await write_inputs(rt, inputs)
        await run_ok(rt, "merged")
        got = await live(rt, "merged")
    assert {k: v["$ids"] for k, v in got.items()} == {
        "c1": ["~:c1", "~:e1", "~:h1", "~:h2"], "e2": ["~:e2"], "h3": ["~:h3"]}


async def test_unmerge_deletion_and_a_changed_equality_value(tmp_path, write_config, inputs):
    inputs.put("crm", "c1", email="a@x")
    inputs.put("crm", "c2", email="b@x")
    inputs.put("crm", "c4", email="d@x")
    inputs.put("erp", "e1", mail="a@x")
    inputs.put("erp", "e3", mail="z@x")
    inputs.put("erp", "e4", mail="d@x")
    cfg = config(write_config, inputs, merge_pipe("merged", TWO))
    async with Runtime(cfg, data_dir=tmp_path / "state") as rt:
        await write_inputs(rt, inputs)
        await run_ok(rt, "merged")
        assert set(await live(rt, "merged")) == {"c1|e1", "c2", "e3", "c4|e4"}
        # unmerge: e1's value no longer matches; c2's now matches e3's; c4 is deleted
        inputs.put("erp", "e1", mail="other@x")
        inputs.put("crm", "c2", email="z@x")
        del inputs.data["crm"]["c4"]
        await write_inputs(rt, inputs)
        result = await run_ok(rt, "merged")
        assert set(await live(rt, "merged")) == {"c1", "e1", "c2|e3", "e4"}
        for gone in ("c1|e1", "c2", "e3", "c4|e4"):  # superseded: their entities live on elsewhere
            tombstone = await latest(rt, "merged", gone)
            assert (tombstone["_deleted"], tombstone.get("$replaced")) == (True, True), gone
        assert result.read == 4 + 4  # the new merged entities and the tombstones, nothing else
        # a deleted entity that was merged with nothing is deleted on its own, not replaced
        del inputs.data["erp"]["e4"]
        await write_inputs(rt, inputs)
        await run_ok(rt, "merged")
        tombstone = await latest(rt, "merged", "e4")
        assert tombstone["_deleted"] is True and "$replaced" not in tombstone


async def test_an_incremental_run_touches_only_the_affected_group(tmp_path, write_config, inputs):
    for n in range(300):
        inputs.put("crm", f"c{n}", email=f"{n}@x")
        inputs.put("erp", f"e{n}", mail=f"{n}@x")
    cfg = config(write_config, inputs, merge_pipe("merged", TWO))
    async with Runtime(cfg, data_dir=tmp_path / "state") as rt:
        await write_inputs(rt, inputs)
        first = await run_ok(rt, "merged")
        assert first.read == 300 and first.new == 300
        again = await run_ok(rt, "merged")
        assert again.read == 0  # nothing changed: nothing read
        inputs.put("erp", "e7", mail="7@x", name="seven")
        await write_inputs(rt, inputs)
        result = await run_ok(rt, "merged")
        assert (result.read, result.changed, result.new) == (1, 1, 0)
        assert (await latest(rt, "merged", "c7|e7"))["name"] == "seven"


class World(Inputs):
    """Random changes to three inputs: equality values that change, become lists or null,
    entities that appear, disappear or come back."""

    def __init__(self, root: Path, seed: int) -> None:
        super().__init__(root)
        self.rng = random.Random(seed)
        for n in range(12):
            for name in INPUTS:
                self.fresh(name, f"{name}{n}")

    def value(self) -> Any:
        rng = self.rng
        pick = rng.random()
        if pick < 0.1:
            return None
        if pick < 0.25:
            return rng.sample(range(8), 2)
        return rng.randrange(8)

    def fresh(self, name: str, rid: str) -> None:
        key = {"crm": "email", "erp": "mail", "hr": "phone"}[name]
        extra = {"phone": self.value()} if name == "erp" else {}
        self.put(name, rid, **{key: self.value()}, note=self.rng.randrange(3), **extra)

    def change(self) -> None:
        rng = self.rng
        for _ in range(rng.randrange(1, 5)):
            name = rng.choice(INPUTS)
            records = self.data[name]
            pick = rng.random()
            if pick < 0.2 and records:
                del records[rng.choice(sorted(records))]
            elif pick < 0.4:
                self.fresh(name, f"{name}{rng.randrange(16)}")  # new, or back, or replaced
            elif records:
                record = records[rng.choice(sorted(records))]
                key = rng.choice([k for k in record if k != "id"])
                record[key] = self.value()


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_incremental_runs_equal_a_full_run_after_random_changes(tmp_path, write_config, seed):
    world = World(tmp_path / "config" / "data", seed)
    cfg = config(write_config, world, merge_pipe("merged", THREE), merge_pipe("oracle", THREE))
    async with Runtime(cfg, data_dir=tmp_path / "state") as rt:
        await write_inputs(rt, world)
        for n in range(12):
            await run_ok(rt, "merged")
            await run_ok(rt, "oracle", full=True)
            got, want = await live(rt, "merged"), await live(rt, "oracle")
            assert got == want, f"seed {seed}, step {n}: {diff(got, want)}"
            world.change()
            await write_inputs(rt, world)


def diff(got: dict, want: dict) -> dict:
    return {k: (got.get(k), want.get(k)) for k in sorted(set(got) | set(want)) if got.get(k) != want.get(k)}


async def test_a_full_run_over_an_unpopulated_input_deletes_nothing(tmp_path, write_config, inputs):
    """The merge is changed to read erp2, whose writer's first run fails (a file cut off): erp2
    is not populated, so a full merge run over it ends ``stopped`` and deletes no merged entity
    (``c1|e1`` would otherwise give way to ``c1``)."""
    inputs.put("crm", "c1", email="a@x")
    inputs.put("erp", "e1", mail="a@x")
    cfg = config(write_config, inputs, merge_pipe("merged", TWO))
    async with Runtime(cfg, data_dir=tmp_path / "state") as rt:
        await write_inputs(rt, inputs)
        await run_ok(rt, "merged")
        before = await live(rt, "merged")
    assert set(before) == {"c1|e1"}
    (cfg / "data" / "erp2.json").write_text('[{"id": "e1", "mail": "a@x"}, {"id": "e2"')
    cfg = config(write_config, inputs, merge_pipe("merged", {**TWO, "datasets": ["crm c", "erp2 e"]}),
                 file_pipe("erp2", "data/erp2.json"))
    async with Runtime(cfg, data_dir=tmp_path / "state") as rt:
        assert not (await rt.run_pipe("erp2")).ok
        result = await run_ok(rt, "merged", full=True)
        assert result.status == "stopped" and result.deleted == 0
        after = await live(rt, "merged")
    assert after["c1|e1"] == before["c1|e1"]


async def test_a_full_run_over_an_emptied_input_fails_and_writes_nothing(tmp_path, write_config, inputs):
    """Every erp entity is deleted upstream: a full merge run over it fails before writing
    anything (with composite ids, the sink's deletion guard would see as many new ids as it
    deletes, and let it through)."""
    for n in range(10):
        inputs.put("crm", f"c{n}", email=f"{n}@x")
        inputs.put("erp", f"e{n}", mail=f"{n}@x")
    cfg = config(write_config, inputs, merge_pipe("merged", TWO))
    async with Runtime(cfg, data_dir=tmp_path / "state") as rt:
        await write_inputs(rt, inputs)
        await run_ok(rt, "merged")
        before = await live(rt, "merged")
        inputs.data["erp"] = {}
        await write_inputs(rt, inputs)
        result = await rt.run_pipe("merged", full=True)
        assert isinstance(result.error, SourceEmptyError)
        assert "'erp' of the merge has no entity (all 10 deleted)" in str(result.error)
        assert (result.new, result.deleted) == (0, 0) and await live(rt, "merged") == before


async def test_bad_merge_config_names_the_key(tmp_path, write_config, inputs):
    bad = merge_pipe("merged", {"datasets": ["crm c", "erp e"], "equality": [["eq", "c.email", "x.mail"]]})
    cfg = config(write_config, inputs, bad)
    with pytest.raises(Exception, match=r"equality\[0\]: 'x.mail' is not ALIAS.PATH"):
        async with Runtime(cfg, data_dir=tmp_path / "state"):
            pass


async def test_external_reference_merges_a_collected_entity_back_on_the_origin_id(tmp_path, write_config, inputs):
    """Sesam's external reference pattern: the target entity carries the CRM id it came from."""
    inputs.put("crm", "c1", email="a@x")
    inputs.put("crm", "c2", email="b@x")
    inputs.put("hr", "t9", external_ref="c2", email="b@x")
    source = {"datasets": ["crm c", "hr t"], "equality": [["eq", "c._id", "t.external_ref"]], "identity": "first"}
    cfg = config(write_config, inputs, merge_pipe("merged", source))
    async with Runtime(cfg, data_dir=tmp_path / "state") as rt:
        await write_inputs(rt, inputs)
        await run_ok(rt, "merged")
        got = await live(rt, "merged")
    assert got["c2"] == {"$ids": ["~:c2", "~:t9"], "id": ["c2", "t9"], "email": "b@x", "external_ref": "c2"}
    assert set(got) == {"c1", "c2"}


async def test_a_group_over_max_merged_fails_naming_it(tmp_path, write_config, inputs):
    for n in range(4):
        inputs.put("crm", f"c{n}", email="same@x")
    inputs.put("erp", "e0", mail="other@x")
    cfg = config(write_config, inputs, merge_pipe("merged", {**TWO, "max_merged": 3}))
    async with Runtime(cfg, data_dir=tmp_path / "state") as rt:
        await write_inputs(rt, inputs)
        await run_ok(rt, "merged")  # rules join crm to erp only: four groups of one
        inputs.put("erp", "e1", mail="same@x")
        await write_inputs(rt, inputs)
        result = await rt.run_pipe("merged")
        assert not result.ok and "more than max_merged 3 (the first: c0, c1, c2)" in str(result.error)
        assert set(await live(rt, "merged")) == {"c0", "c1", "c2", "c3", "e0"}  # nothing committed


def test_composite_ids_of_different_groups_differ():
    assert composite_id(["a", "b"]) == "a|b"
    assert composite_id(["a|b"]) == "a\\|b" != composite_id(["a", "b"])
    assert composite_id(["a\\", "b"]) != composite_id(["a\\|b"])
