"""Optimistic locking (share pattern item 4, seeds 001/002) against our target API: an update
pipe hopping to the collect dataset; a record another writer changed since the last collect is
discarded as ``modified-in-system``, counted, held until the next collect, then updated; a change
between the read and the write gets a 412 (a conflict too); a target requiring ``If-Match`` of a
sink without locking is a config error naming the system; DTL's ``hash128`` over an entity equals
the sink's state hash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mmh3
import orjson

from runtime import Runtime
from runtime.dtl.rules import RuleSet
from runtime.entities import state_hash
from runtime.errors import ConfigError
from tests.servers.target_api import TargetApi
from tests.share.conftest import target_system

COLLECTED = ["first", ["hops", {"datasets": ["target-records t"], "where": [["eq", "_S.id", "t.id"]]}]]


def people(names: dict[str, str]) -> dict[str, Any]:
    """The local dataset ``people``: one entity per target record (``id`` = the target's id)."""
    items = [{"_id": f"p{rid[1:]}", "id": rid, "name": name, "ref": f"p{rid[1:]}"} for rid, name in names.items()]
    return {"_id": "people", "type": "pipe", "source": {"type": "embedded", "entities": items}}


def collect() -> dict[str, Any]:
    return {"_id": "target-records", "type": "pipe",
            "source": {"type": "rest", "system": "target", "url": "/records", "payload_property": "data",
                       "id_expression": "{{ id }}"}}


def update(locking: bool = True) -> dict[str, Any]:
    sink: dict[str, Any] = {"type": "rest", "system": "target", "update_operation": "update", "concurrency": 4}
    if locking:
        sink["optimistic_locking"] = {"operation": "get"}
    return {"_id": "update", "type": "pipe", "source": {"type": "dataset", "dataset": "people"},
            "transform": {"type": "dtl", "rules": {"default": [["copy", "*"], ["add", "$collected", COLLECTED]]}},
            "sink": sink, "pump": {"dead_letter_dataset": "update-dead", "max_retries_per_entity": 2}}


def seed(target: TargetApi, n: int) -> None:
    for i in range(1, n + 1):
        target._create({"name": f"old {i}", "ref": f"p{i}"}, None)


async def outcomes(r: Runtime) -> dict[str, dict[str, Any]]:
    return {o["_id"]: o for o in await r.entities("update-responses", limit=1000)}


def stale_updates(target: TargetApi) -> list[dict[str, Any]]:
    """Updates whose If-Match was not the version just before them (a write based on a stale read)."""
    version: dict[str, int] = {}
    stale = []
    for w in target.log:
        if w["op"] == "update" and w["if_match"] != f'"v{version.get(w["id"])}"':
            stale.append(w)
        version[w["id"]] = w["version"]
    return stale


async def test_a_record_changed_in_the_system_is_discarded_then_updated_after_the_next_collect(
        target: TargetApi, write_config, tmp_path: Path) -> None:
    seed(target, 6)
    names = {f"r{i}": f"new {i}" for i in range(1, 7)}
    cfg = write_config([target_system(target.url), people(names), collect(), update()])
    async with Runtime(cfg, data_dir=tmp_path / "data") as r:
        for pipe in ("people", "target-records"):
            assert (await r.run_pipe(pipe)).ok
        target.touch("r2")  # another writer, after the collect
        run = await r.run_pipe("update")
        assert run.ok and run.changed == 5 and run.conflicted == 1, run.summary()
        o = (await outcomes(r))["p2"]
        assert o["state"] == "modified-in-system" and "changed since the last collect" in o["error"]
        assert target.records["r2"]["name"] == "old 2" and target.records["r2"]["touched"] == 1
        assert not await r.entities("update-dead", limit=10)  # a conflict is not an entity error
        gets = len([q for q in target.requests if q.startswith("GET /records/")])
        held = await r.run_pipe("update", full=True)  # same collected version: held, nothing asked
        assert held.ok and held.conflicted == 1 and held.unchanged == 5
        assert len([q for q in target.requests if q.startswith("GET /records/")]) == gets
        assert (await r.run_pipe("target-records")).ok  # the collect brings r2's new state
        retried = await r.run_pipe("update")  # dependency tracking puts p2 through again
        assert retried.ok and retried.tracked >= 1 and retried.changed == 1 and retried.conflicted == 0
        assert (await outcomes(r))["p2"]["state"] == "sent"
    assert {rid: rec["name"] for rid, rec in target.records.items()} == names
    assert len([w for w in target.log if w["op"] == "update"]) == 6
    assert stale_updates(target) == []  # every update carried the If-Match of the version it read


async def test_a_write_between_the_read_and_the_update_is_a_412_conflict(target: TargetApi, write_config,
                                                                         tmp_path: Path) -> None:
    seed(target, 3)
    cfg = write_config([target_system(target.url), people({"r1": "a", "r2": "b", "r3": "c"}), collect(), update()])
    async with Runtime(cfg, data_dir=tmp_path / "data") as r:
        for pipe in ("people", "target-records"):
            assert (await r.run_pipe(pipe)).ok
        target.touch_after_read.add("r3")
        run = await r.run_pipe("update")
        o = (await outcomes(r))["p3"]
    assert run.ok and run.changed == 2 and run.conflicted == 1
    assert o["state"] == "modified-in-system" and o["status"] == 412
    assert target.records["r3"]["name"] == "old 3"
    assert stale_updates(target) == []


async def test_a_target_requiring_if_match_of_a_sink_without_locking_is_a_config_error(
        target: TargetApi, write_config, tmp_path: Path) -> None:
    seed(target, 2)
    target.require_if_match = True
    cfg = write_config([target_system(target.url), people({"r1": "a", "r2": "b"}), collect(), update(locking=False)])
    async with Runtime(cfg, data_dir=tmp_path / "data") as r:
        assert (await r.run_pipe("people")).ok
        assert (await r.run_pipe("target-records")).ok  # the update's hop waits for its collect
        run = await r.run_pipe("update")
    assert not run.ok and isinstance(run.error, ConfigError)
    assert "system 'target' answered 428" in str(run.error) and "optimistic_locking" in str(run.error)
    assert not [w for w in target.log if w["op"] == "update"]


def test_dtl_hash128_of_an_entity_is_the_sinks_state_hash() -> None:
    record = {"id": "r1", "name": "x", "amount": 3, "nested": {"b": 1, "a": [1, 2]}}
    entity = {**record, "_id": "r1", "_updated": 7, "$origin": "p1"}
    rules = RuleSet({"default": [["add", "h", ["hash128", "murmur3", "_S."]],
                                 ["add", "s", ["hash128", "murmur3", "_S.name"]]]})
    (out,) = rules.apply(entity)
    expected = mmh3.hash128(orjson.dumps(record, option=orjson.OPT_SORT_KEYS), 0, signed=False)
    assert out["h"] == state_hash(record) == state_hash(entity) == expected
    assert out["s"] == mmh3.hash128(b"x", 0, signed=False)
