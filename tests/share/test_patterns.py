"""Insert, update and delete as separate pipes (share pattern item 5) and establish origin
(item 6) against our target API, which ignores ``Idempotency-Key`` and loses 10 % of the
responses after applying the write: the write log shows exactly one create per entity and no
update based on a stale read, and the target ends equal to the local dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runtime import Runtime
from tests.servers.target_api import TargetApi
from tests.share.conftest import target_system
from tests.share.patterns import share_pipes
from tests.share.test_locking import stale_updates


def person(i: int, name: str | None = None) -> dict[str, Any]:
    return {"_id": f"p{i:02}", "name": name or f"person {i}", "amount": i}


class World:
    """The config (``people`` embedded, the share pipes) rewritten per step, and a runtime over it."""

    def __init__(self, target: TargetApi, write_config: Any, tmp_path: Path) -> None:
        self.target, self.write_config, self.data = target, write_config, tmp_path / "data"

    def runtime(self, people: list[dict[str, Any]]) -> Runtime:
        pipes = [target_system(self.target.url),
                 {"_id": "people", "type": "pipe", "source": {"type": "embedded", "entities": people}},
                 *share_pipes()]
        return Runtime(self.write_config(pipes), data_dir=self.data)


async def converge(r: Runtime, *pipes: str, rounds: int = 6) -> None:
    """Run ``pipes`` in order until a round changes nothing in their ledgers."""
    for _ in range(rounds):
        results = [await r.run_pipe(p) for p in pipes]
        states = {o["state"] for p in pipes if p != "target-records"
                  for o in await r.entities(f"{p}-responses", limit=10_000)}
        if all(x.status == "completed" for x in results) and states <= {"sent"}:
            return
    raise AssertionError(f"not converged: {[x.summary() for x in results]}, states {states}")


def by_ref(target: TargetApi) -> dict[str, dict[str, Any]]:
    return {rec["ref"]: rec for rec in target.records.values()}


async def test_insert_update_delete_pipes_under_lost_responses(target: TargetApi, write_config,
                                                               tmp_path: Path) -> None:
    target.honour_idempotency = False
    target.chaos(0.1, seed=3, kinds=({"lost": True},))
    world = World(target, write_config, tmp_path)
    people = [person(i) for i in range(30)]
    async with world.runtime(people) as r:
        assert (await r.run_pipe("people")).ok
        await converge(r, "insert", "target-records", "update")
        collected = {e["_id"]: e for e in await r.entities("target-records", limit=1000)}
    assert sorted(w["ref"] for w in (target.records[c["id"]] for c in target.creates())) == [p["_id"] for p in people]
    assert {c["$origin"] for c in collected.values()} == {p["_id"] for p in people}  # origin established
    assert not [w for w in target.log if w["op"] == "update"]  # the target already held every payload

    # local changes to ten people; another writer changes three of them after the collect
    people[:10] = [person(i, f"renamed {i}") for i in range(10)]
    for ref in ("p01", "p04", "p07"):
        target.touch(by_ref(target)[ref]["id"])
    async with world.runtime(people) as r:
        assert (await r.run_pipe("people")).ok
        first = await r.run_pipe("update")
        assert first.ok and first.conflicted >= 3, first.summary()
        states = {o["_id"]: o["state"] for o in await r.entities("update-responses", limit=1000)}
        assert {states[k] for k in ("p01", "p04", "p07")} == {"modified-in-system"}
        await converge(r, "target-records", "update")
        # reprocessing the insert pipe from scratch inserts nothing (its ledger and the collect)
        assert (await r.run_pipe("insert", full=True)).ok
    assert {k: v["name"] for k, v in by_ref(target).items()} == {p["_id"]: p["name"] for p in people}
    assert all(by_ref(target)[k]["touched"] == 1 for k in ("p01", "p04", "p07"))  # read before overwritten

    # five people deleted locally: the delete pipe deletes them in the target
    async with world.runtime(people[5:]) as r:
        assert (await r.run_pipe("people")).ok
        await converge(r, "delete", "insert", "target-records", "update")
    assert sorted(by_ref(target)) == [p["_id"] for p in people[5:]]
    refs = sorted(target.records.get(c["id"], {}).get("ref") or c["id"] for c in target.creates())
    assert len(refs) == 30 and len(set(refs)) == 30  # exactly one create per entity
    assert stale_updates(target) == []
    assert target.drawn  # responses were lost
