"""Dependency tracking (Sesam, seed 004) through real pipe runs over real datasets in a SQLite
store: customers, addresses and cities written by file pipes, and a DTL pipe hopping from
customers to them (1-n, n-1, n-n, null, list and deleted join values, a chained hop, a hop inside
an ``apply-hops`` rule, a recursive self-hop on the source dataset).

The oracle is the same pipe run from scratch: after every step of a random sequence of changes,
the incrementally run pipe (with dependency tracking) must hold exactly the entities a full run
of an identical pipe gives."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from runtime import Runtime
from runtime.errors import DependencyTrackingError
from tests.core.helpers import file_pipe, write_ndjson

FILTER_DELETED = ["filter", ["neq", "_S._deleted", True]]
RULES = {
    "default": [
        ["copy", "_id"],
        FILTER_DELETED,
        ["copy", "name"],
        # 1-n: every address of the customer
        ["add", "cities", ["hops", {"datasets": ["addresses a"], "where": [["eq", "a.customer_id", "_S._id"]],
                                    "return": "a.city"}]],
        # n-1 with null and list join values
        ["add", "home", ["hops", {"datasets": ["addresses a"], "where": [["eq", "_S.address_id", "a._id"]],
                                  "return": "a.street"}]],
        # n-n: overlapping tag lists
        ["add", "peers", ["hops", {"datasets": ["addresses a"], "where": [["eq", "_S.tags", "a.tags"]],
                                   "return": "a._id"}]],
        # a chain over two datasets: the home address's city's country
        ["add", "country", ["hops", {"datasets": ["addresses a", "cities c"],
                                     "where": [["eq", "_S.address_id", "a._id"], ["eq", "a.city", "c._id"]],
                                     "return": "c.country"}]],
        # hops inside the rule apply-hops applies
        ["add", "addresses", ["apply-hops", "address", {"datasets": ["addresses a"],
                                                        "where": [["eq", "a.customer_id", "_S._id"]]}]],
        # a recursive self-hop on the source dataset
        ["add", "referrers", ["path", "_id", ["hops", {"datasets": ["customers r"],
                                                       "where": [["eq", "_S.referred_by", "r._id"]],
                                                       "recurse": True, "exclude_root": True}]]],
    ],
    "address": [
        ["copy", "_id"],
        ["copy", "street"],
        ["add", "population", ["hops", {"datasets": ["cities c"], "where": [["eq", "_S.city", "c._id"]],
                                        "return": "c.population"}]],
    ],
}
CITIES = ["oslo", "bergen", "trondheim", "tromso", "bodo"]
TAGS = ["x", "y", "z"]


def dtl_pipe(pid: str, rules: dict[str, Any] = RULES, **extra: Any) -> dict[str, Any]:
    return {"_id": pid, "type": "pipe", "source": {"type": "dataset", "dataset": "customers"},
            "transform": {"type": "dtl", "rules": rules}, **extra}


class World:
    """The source files of customers, addresses and cities, changed at random."""

    def __init__(self, root: Path, seed: int) -> None:
        self.root, self.rng = root, random.Random(seed)
        self.customers: dict[str, dict[str, Any]] = {}
        self.addresses: dict[str, dict[str, Any]] = {}
        self.cities = {c: {"id": c, "country": "NO", "population": i * 1000} for i, c in enumerate(CITIES, 1)}
        for i in range(12):
            self.add_customer(f"c{i:02}")
        for i in range(18):
            self.add_address(f"a{i:02}")

    def add_customer(self, cid: str) -> None:
        rng = self.rng
        self.customers[cid] = {"id": cid, "name": f"n{rng.randrange(100)}", "address_id": self.address_ref(),
                               "tags": rng.sample(TAGS, rng.randrange(3)),
                               "referred_by": rng.choice([None, *self.customers])}

    def add_address(self, aid: str) -> None:
        rng = self.rng
        self.addresses[aid] = {"id": aid, "street": f"s{rng.randrange(100)}", "city": rng.choice(CITIES),
                               "customer_id": rng.choice([None, *self.customers]),
                               "tags": rng.sample(TAGS, rng.randrange(3))}

    def address_ref(self) -> Any:
        rng, ids = self.rng, sorted(self.addresses) or ["a00"]
        return rng.choice([None, rng.choice(ids), rng.sample(ids, min(2, len(ids))), "a-missing"])

    def change(self) -> None:
        """One to three random changes: join values that change, become null or lists, entities
        added and deleted, a city's country changed (two hops away)."""
        rng = self.rng
        for _ in range(rng.randint(1, 3)):
            kind = rng.randrange(9)
            if kind == 0:
                self.add_customer(f"c{len(self.customers) + rng.randrange(1000):03}")
            elif kind == 1 and len(self.customers) > 6:
                del self.customers[rng.choice(sorted(self.customers))]
            elif kind == 2:
                self.add_address(f"a{len(self.addresses) + rng.randrange(1000):03}")
            elif kind == 3 and len(self.addresses) > 8:
                del self.addresses[rng.choice(sorted(self.addresses))]
            elif kind == 4:
                self.addresses[rng.choice(sorted(self.addresses))]["customer_id"] = rng.choice(
                    [None, *self.customers])
            elif kind == 5:
                a = self.addresses[rng.choice(sorted(self.addresses))]
                a["city"], a["street"], a["tags"] = rng.choice(CITIES), f"s{rng.randrange(100)}", rng.sample(TAGS, 1)
            elif kind == 6:
                c = self.customers[rng.choice(sorted(self.customers))]
                c["address_id"], c["referred_by"] = self.address_ref(), rng.choice([None, *self.customers])
            elif kind == 7:
                city = self.cities[rng.choice(CITIES)]
                city["country"], city["population"] = rng.choice(["NO", "SE"]), rng.randrange(10**6)
            else:
                c = self.customers[rng.choice(sorted(self.customers))]
                c["tags"] = rng.sample(TAGS, rng.randrange(3))

    def write(self) -> None:
        for name in ("customers", "addresses", "cities"):
            write_ndjson(self.root / f"{name}.ndjson", sorted(getattr(self, name).values(), key=lambda r: r["id"]))


def world_config(write_config, world: World, *pipes: dict[str, Any]) -> Path:
    world.write()
    # the writers never trip the breaker's deletion guard on these small datasets
    writers = [file_pipe(n, f"data/{n}.ndjson", sink={"type": "dataset", "circuit_breaker_deletion_factor": None})
               for n in ("customers", "addresses", "cities")]
    return write_config([*writers, *pipes])


async def live(rt: Runtime, dataset: str) -> dict[str, dict[str, Any]]:
    found = await rt.entities(dataset, limit=100_000)
    return {e["_id"]: {k: v for k, v in e.items() if not k.startswith("_")}
            for e in found if not e.get("_deleted")}


async def run_ok(rt: Runtime, pipe: str, *, full: bool = False):
    result = await rt.run_pipe(pipe, full=full)
    assert result.ok, result.error
    return result


async def step(rt: Runtime) -> tuple[int, dict, dict]:
    for writer in ("customers", "addresses", "cities"):
        await run_ok(rt, writer)
    incremental = await run_ok(rt, "enriched")
    await run_ok(rt, "oracle", full=True)
    return incremental.tracked, await live(rt, "enriched"), await live(rt, "oracle")


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_incremental_runs_with_tracking_equal_a_full_run(tmp_path, write_config, seed):
    world = World(tmp_path / "config" / "data", seed)
    cfg = world_config(write_config, world, dtl_pipe("enriched"), dtl_pipe("oracle"))
    tracked_total = 0
    async with Runtime(cfg, data_dir=tmp_path / "state") as rt:
        _, got, want = await step(rt)
        assert got == want and len(got) == len(world.customers)
        for n in range(10):
            world.change()
            world.write()
            tracked, got, want = await step(rt)
            tracked_total += tracked
            assert got == want, f"seed {seed}, step {n}: {diff(got, want)}"
        state = await rt.pipe_state("enriched")
        assert set(state.tracking) == {"addresses", "cities", "customers"}
    assert tracked_total > 0  # the changes reached the pipe through tracking, not only as source changes


def diff(got: dict, want: dict) -> dict:
    return {k: (got.get(k), want.get(k)) for k in sorted(set(got) | set(want)) if got.get(k) != want.get(k)}


async def test_only_the_affected_entities_go_through_again(tmp_path, write_config):
    world = World(tmp_path / "config" / "data", 11)
    cfg = world_config(write_config, world, dtl_pipe("enriched"))
    async with Runtime(cfg, data_dir=tmp_path / "state") as rt:
        for writer in ("customers", "addresses", "cities", "enriched"):
            await run_ok(rt, writer)
        again = await run_ok(rt, "enriched")
        assert again.read == 0 and again.tracked == 0  # nothing changed: nothing to do
        # one city changes: only the customers whose hops reached it depend on it (those with an
        # address in it, and those whose home address is in it)
        world.cities["oslo"]["population"] = 1
        world.write()
        await run_ok(rt, "cities")
        in_oslo = {a["id"] for a in world.addresses.values() if a["city"] == "oslo"}
        owners = {a["customer_id"] for a in world.addresses.values() if a["id"] in in_oslo} - {None}
        homes = {c["id"] for c in world.customers.values()
                 if set(c["address_id"] if isinstance(c["address_id"], list) else [c["address_id"]]) & in_oslo}
        assert owners and homes - owners  # the case covers both paths
        result = await run_ok(rt, "enriched")
        assert result.tracked == len(owners | homes) and result.read == len(owners | homes)
        for cid in owners:
            entity = (await rt.entity("enriched", cid))[-1]
            assert [1] in [a["population"] for a in entity["addresses"]]


async def test_track_dependencies_false_leaves_that_hop_untracked(tmp_path, write_config):
    rules = {"default": [
        ["copy", "_id"],
        ["add", "home", ["hops", {"datasets": ["addresses a"], "where": [["eq", "_S.address_id", "a._id"]],
                                  "return": "a.street", "track-dependencies": False}]]]}
    world = World(tmp_path / "config" / "data", 8)
    cfg = world_config(write_config, world, dtl_pipe("enriched", rules))
    async with Runtime(cfg, data_dir=tmp_path / "state") as rt:
        for writer in ("customers", "addresses", "cities", "enriched"):
            await run_ok(rt, writer)
        for a in world.addresses.values():
            a["street"] = "renamed"
        world.write()
        await run_ok(rt, "addresses")
        result = await run_ok(rt, "enriched")
        assert result.tracked == 0 and (await rt.pipe_state("enriched")).tracking == {}
        assert all(e.get("home") != "renamed" for e in (await live(rt, "enriched")).values())


async def test_compacting_the_hopped_to_dataset_loses_no_dependency(tmp_path, write_config):
    """Tracking matches a changed entity by its id, not by its old join value: compaction down to
    one version per id between runs changes nothing."""
    world = World(tmp_path / "config" / "data", 9)
    cfg = world_config(write_config, world, dtl_pipe("enriched"), dtl_pipe("oracle"))
    async with Runtime(cfg, data_dir=tmp_path / "state") as rt:
        await step(rt)
        for n in range(6):
            for a in world.addresses.values():  # every address moves to another customer
                a["customer_id"] = world.rng.choice([None, *world.customers])
            world.write()
            await run_ok(rt, "addresses")
            await rt.store.compact("addresses", 1)
            _, got, want = await step(rt)
            assert got == want, f"step {n}: {diff(got, want)}"


REGION_RULES = {"default": [["copy", "_id"], ["add", "near", ["hops", {
    "datasets": ["addresses a"], "where": [["eq", "a.region", "_S.region"]], "return": "a.v"}]]]}


async def region_changed(tmp_path: Path, write_config, customers: int) -> Runtime:
    """A join on a shared value: ``customers`` customers all hop to the one address of region
    'north'; after a first run of every pipe, that address changes (thresholds 5 and 20). Returns
    the open runtime, its ``enriched`` run not yet made."""
    data = tmp_path / "config" / "data"
    write_ndjson(data / "customers.ndjson", [{"id": f"c{i}", "region": "north"} for i in range(customers)])
    write_ndjson(data / "addresses.ndjson", [{"id": "a1", "region": "north", "v": 1}])
    limits = {"dependency_warning_threshold": 5, "dependency_error_threshold": 20}
    cfg = write_config([file_pipe("customers", "data/customers.ndjson"),
                        file_pipe("addresses", "data/addresses.ndjson"),
                        dtl_pipe("enriched", REGION_RULES, dependency_tracking=limits)])
    rt = Runtime(cfg, data_dir=tmp_path / "state")
    await rt.open()
    for writer in ("customers", "addresses", "enriched"):
        await run_ok(rt, writer)
    write_ndjson(data / "addresses.ndjson", [{"id": "a1", "region": "north", "v": 2}])
    await run_ok(rt, "addresses")
    return rt


async def test_too_many_pending_entities_fail_naming_the_hop_and_join_value(tmp_path, write_config):
    """Changing the shared region's address puts all 30 customers through again, past the error
    threshold."""
    rt = await region_changed(tmp_path, write_config, 30)
    try:
        result = await rt.run_pipe("enriched")
        assert result.status == "failed" and isinstance(result.error, DependencyTrackingError)
        message = str(result.error)
        assert "more than 20" in message and "addresses.region = 'north'" in message
        assert "rules.default[1][2][1]" in message and "track-dependencies" in message
        assert result.read == 0  # nothing was processed
        before = (await rt.entity("enriched", "c1"))[-1]["near"]
        assert before in (1, [1])
        # a full run reprocesses everything and resets the tracking offsets
        await run_ok(rt, "enriched", full=True)
        assert (await rt.entity("enriched", "c1"))[-1]["near"] in (2, [2])
        assert (await run_ok(rt, "enriched")).tracked == 0
    finally:
        await rt.close()


async def test_pending_entities_over_the_warning_threshold_log_a_warning(tmp_path, write_config, caplog):
    rt = await region_changed(tmp_path, write_config, 8)
    try:
        result = await run_ok(rt, "enriched")
        assert result.tracked == 8
    finally:
        await rt.close()
    assert "tracking.many_pending" in caplog.text and "addresses.region = 'north'" in caplog.text
