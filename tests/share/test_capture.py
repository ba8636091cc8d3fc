"""Capture response with transform (seeds 001/002): the ``rest`` transform with
``side_effects: true`` against our target API. Its responses land in the sink dataset, each
call's outcome commits in the outcome ledger while the others are in flight, nothing is sent
twice (lost responses, failed batches, re-runs), and pipes where it would re-send are refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runtime import Runtime
from runtime.config.loader import load_config
from runtime.errors import ConfigError, FatalError
from runtime.plugins import default_registry
from tests.servers.target_api import TargetApi
from tests.share.conftest import entities, target_system
from tests.share.test_rest_sink import ledger, refs_created


def capture_pipe(items: list[dict[str, Any]], **transform: Any) -> dict[str, Any]:
    """``capture``: embedded entities, a side-effecting POST per entity, responses in the
    dataset ``capture``."""
    return {
        "_id": "capture", "type": "pipe", "source": {"type": "embedded", "entities": items},
        "transform": {"type": "rest", "system": "target", "operation": "insert", "side_effects": True,
                      "concurrency": 8, "response_status_property": "status", **transform},
    }


async def captured(r: Runtime) -> dict[str, dict[str, Any]]:
    return {e["_id"]: e for e in await r.entities("capture", limit=100_000)}


def ids_by_ref(target: TargetApi) -> dict[str, str]:
    return {rec["ref"]: rid for rid, rec in target.records.items()}


@pytest.mark.parametrize("honoured", [True, False], ids=["idempotency-key-replayed", "lookup-by-reference"])
async def test_lost_responses_create_one_record_per_entity(target: TargetApi, write_config, tmp_path: Path,
                                                           honoured: bool) -> None:
    target.honour_idempotency = honoured
    target.chaos(0.2, seed=7, kinds=({"lost": True},))  # applied, then the connection is reset
    keys = {"idempotency_key_honoured": True} if honoured else {"lookup_operation": "lookup"}
    cfg = write_config([target_system(target.url), capture_pipe(entities(40), **keys)])
    async with Runtime(cfg, data_dir=tmp_path / "data") as r:
        for _ in range(5):
            if (await r.run_pipe("capture")).ok:
                break
        out = await captured(r)
        outcomes = await ledger(r, "capture")
        creates = len(target.creates())
        again = await r.run_pipe("capture")
    assert target.drawn  # responses were lost
    assert refs_created(target) == sorted(e["_id"] for e in entities(40))  # one create per entity
    assert {o["state"] for o in outcomes.values()} == {"sent"}
    by_ref = ids_by_ref(target)
    # each entity got its record's id: from the response, a replay, or the look-up
    assert {k: o["generated_id"] for k, o in outcomes.items()} == by_ref
    assert set(out) == set(by_ref)
    assert again.ok and again.new == again.changed == 0 and len(target.creates()) == creates  # nothing re-sent
    # every entity's response captured: the 201's record, or the record a look-up found after a lost one
    assert {k: e["response"]["id"] for k, e in out.items()} == by_ref
    if honoured:
        assert target.replays > 0 and {e["status"] for e in out.values()} == {201}
    else:
        assert {e["status"] for e in out.values()} == {200, 201}


async def test_outcomes_commit_per_entity_while_calls_are_in_flight(target: TargetApi, write_config,
                                                                   tmp_path: Path) -> None:
    """Sesam's ``batch_size: 1`` without giving up concurrency: one call of a batch of 30 is
    rejected, the run fails and the sink dataset gets nothing of that batch; the next run sends
    only the rejected entity and rebuilds the other 29 outputs from the ledger."""
    target.latency = 0.02
    items = entities(30)
    items[17]["name"] = ""  # 422 with a field list
    write_config([target_system(target.url), capture_pipe(items)])
    cfg = tmp_path / "config"
    async with Runtime(cfg, data_dir=tmp_path / "data") as r:
        first = await r.run_pipe("capture")
        after_first = await ledger(r, "capture")
        nothing = await captured(r)
    assert not first.ok and isinstance(first.error, FatalError) and "'e017'" in str(first.error)
    assert target.max_in_flight > 1
    assert nothing == {}
    assert sorted(k for k, o in after_first.items() if o["state"] == "sent") == sorted(
        e["_id"] for e in items if e["_id"] != "e017")
    assert after_first["e017"]["state"] == "failed" and after_first["e017"]["status"] == 422
    assert after_first["e017"]["response"]["errors"][0]["field"] == "name"
    requests = len(target.requests)

    items[17]["name"] = "entity 17"
    write_config([target_system(target.url), capture_pipe(items)])
    async with Runtime(cfg, data_dir=tmp_path / "data") as r:
        second = await r.run_pipe("capture")
        out = await captured(r)
    assert second.ok and second.new == 30
    assert target.requests[requests:] == ["POST /records"]  # only the rejected entity
    assert refs_created(target) == sorted(e["_id"] for e in items)
    by_ref = ids_by_ref(target)
    assert {k: (e["response"]["id"], e["status"]) for k, e in out.items()} == {k: (v, 201) for k, v in by_ref.items()}


def _problems(cfg: Path) -> list[tuple[str | None, str, str]]:
    with pytest.raises(ConfigError) as caught:
        load_config(cfg, default_registry())
    return [(p.pipe, p.key, p.reason) for p in caught.value.problems]


def test_dependency_tracking_of_a_side_effecting_pipe_is_refused(write_config) -> None:
    pipe = capture_pipe([])
    pipe["source"] = {"type": "dataset", "dataset": "people"}
    hop = ["hops", {"datasets": ["accounts a"], "where": [["eq", "_S._id", "a.owner"]]}]
    pipe["transform"] = [{"type": "dtl", "rules": {"default": [["copy", "*"], ["add", "account", hop]]}},
                         pipe["transform"]]
    found = _problems(write_config([target_system("http://127.0.0.1:9"), pipe]))
    assert len(found) == 1
    where, key, reason = found[0]
    assert (where, key) == ("capture", "transform[1]")
    assert "tracks dependencies on 'accounts'" in reason and "track-dependencies" in reason

    hop[1]["track-dependencies"] = False  # the way out the error names
    load_config(write_config([target_system("http://127.0.0.1:9"), pipe]), default_registry())


def test_a_publisher_with_a_side_effecting_transform_is_refused(write_config) -> None:
    pipe = capture_pipe([])
    pipe["sink"] = {"type": "http_endpoint"}
    found = _problems(write_config([target_system("http://127.0.0.1:9"), pipe]))
    assert len(found) == 1 and found[0][:2] == ("capture", "transform")
    assert "is a publisher" in found[0][2]


@pytest.mark.parametrize(("keys", "says"), [
    ({"side_effects": False, "lookup_operation": "lookup"}, "lookup_operation only apply with side_effects"),
    ({"replace_entity": True}, "replace_entity does not apply"),
    ({"lookup_operation": "nope"}, "has no operation 'nope'"),
])
def test_ledger_keys_need_side_effects(write_config, keys: dict[str, Any], says: str) -> None:
    found = _problems(write_config([target_system("http://127.0.0.1:9"), capture_pipe([], **keys)]))
    assert len(found) == 1 and says in found[0][2]


@pytest.mark.parametrize(("keys", "refused"), [
    ({}, True),  # the operation is a POST: say whether its calls change the target
    ({"method": "PUT"}, True),  # an inline method counts as the operation's
    ({"side_effects": False}, False),  # said: plain calls, made again on every run
    ({"method": "GET"}, False),  # a read needs no answer
])
def test_a_write_operation_must_say_side_effects(write_config, keys: dict[str, Any], refused: bool) -> None:
    pipe = capture_pipe([])
    del pipe["transform"]["side_effects"]
    pipe["transform"].update(keys)
    cfg = write_config([target_system("http://127.0.0.1:9"), pipe])
    if not refused:
        load_config(cfg, default_registry())
        return
    found = _problems(cfg)
    assert len(found) == 1 and found[0][:2] == ("capture", "transform.side_effects")
    assert f"the calls are {keys.get('method', 'POST')} requests" in found[0][2]
    assert "side_effects: true" in found[0][2] and "side_effects: false" in found[0][2]


async def test_the_ledger_is_populated_when_a_run_completes(target: TargetApi, write_config, tmp_path: Path) -> None:
    """A pipe hopping to the outcome ledger waits for it like for any dataset (Sesam's populated
    flag): not while the capture pipe has only failed, and from its first completed run on."""
    items = entities(5)
    items[2]["name"] = ""  # 422: the first run fails
    rules = {"default": [["copy", "_id"], ["add", "state", ["hops", {
        "datasets": ["capture-responses r"], "where": [["eq", "_S._id", "r._id"]], "return": "r.state",
        "track-dependencies": False}]]]}
    report = {"_id": "report", "type": "pipe", "source": {"type": "dataset", "dataset": "capture"},
              "transform": {"type": "dtl", "rules": rules}}
    cfg = write_config([target_system(target.url), capture_pipe(items), report])
    async with Runtime(cfg, data_dir=tmp_path / "data") as r:
        assert not (await r.run_pipe("capture")).ok
        info = await r.store.dataset_info("capture-responses")
        assert info is not None and info.ids == 5 and not info.populated  # outcomes, but no completed run
        items[2]["name"] = "entity 2"
        write_config([target_system(target.url), capture_pipe(items), report])
    async with Runtime(cfg, data_dir=tmp_path / "data") as r:
        assert (await r.run_pipe("capture")).ok
        assert (await r.store.dataset_info("capture-responses")).populated  # type: ignore[union-attr]
        assert (await r.run_pipe("report")).status == "completed"
        assert {e["_id"]: e["state"] for e in await r.entities("report")} == {e["_id"]: ["sent"] for e in items}
