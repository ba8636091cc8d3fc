"""The ``rest`` sink against our target API: ledger, skip of unchanged sends, idempotency keys,
lost responses, retries across runs then dead letters, the error-ratio gate, JSON Schema."""

from __future__ import annotations

from pathlib import Path

from runtime import Runtime
from tests.servers.target_api import TargetApi
from tests.share.conftest import entities, share_pipe, target_system


def rt(cfg: Path, tmp_path: Path) -> Runtime:
    return Runtime(cfg, data_dir=tmp_path / "data")


async def ledger(r: Runtime, pipe: str) -> dict[str, dict]:
    return {e["_id"]: e for e in await r.entities(f"{pipe}-responses", limit=100_000)}


async def test_inserts_once_and_skips_unchanged_entities(target: TargetApi, write_config, tmp_path) -> None:
    target.latency = 0.02
    cfg = write_config([target_system(target.url), share_pipe("share", entities(30))])
    async with rt(cfg, tmp_path) as r:
        first = await r.run_pipe("share")
        assert first.ok and first.new == 30
        assert len(target.creates()) == 30 and target.max_in_flight > 1
        outcomes = await ledger(r, "share")
        assert {o["state"] for o in outcomes.values()} == {"sent"}
        assert {o["generated_id"] for o in outcomes.values()} == set(target.records)
        assert all(o["attempt"] == 1 and o["status"] == 201 for o in outcomes.values())
        second = await r.run_pipe("share")
        assert second.ok and second.unchanged == 30 and second.new == 0
        assert len(target.creates()) == 30  # nothing sent again


def refs_created(target: TargetApi) -> list[str]:
    return sorted(target.records[w["id"]]["ref"] for w in target.creates() if w["id"] in target.records)


async def run_until_sent(r: Runtime, pipe: str, runs: int = 4) -> None:
    for _ in range(runs):
        await r.run_pipe(pipe)
        states = {o["state"] for o in (await ledger(r, pipe)).values()}
        if states == {"sent"}:
            return


async def test_lost_responses_with_a_target_honouring_idempotency_keys(target: TargetApi, write_config,
                                                                      tmp_path) -> None:
    target.chaos(0.3, seed=4, kinds=({"lost": True},))
    pipe = share_pipe("share", entities(40), idempotency_key_honoured=True)
    cfg = write_config([target_system(target.url), pipe])
    async with rt(cfg, tmp_path) as r:
        await run_until_sent(r, "share")
        assert {o["state"] for o in (await ledger(r, "share")).values()} == {"sent"}
    assert target.replays > 0  # lost responses were retried with the same key and replayed
    assert refs_created(target) == sorted(e["_id"] for e in entities(40))  # one create per entity


async def test_a_target_ignoring_idempotency_keys_gets_no_duplicates_with_a_lookup(target: TargetApi, write_config,
                                                                                   tmp_path) -> None:
    target.honour_idempotency = False
    target.chaos(0.3, seed=4, kinds=({"lost": True},))
    pipe = share_pipe("share", entities(40), lookup_operation="lookup")
    cfg = write_config([target_system(target.url), pipe])
    async with rt(cfg, tmp_path) as r:
        await run_until_sent(r, "share")
        outcomes = await ledger(r, "share")
    assert {o["state"] for o in outcomes.values()} == {"sent"}
    assert target.drawn  # responses were lost
    assert refs_created(target) == sorted(e["_id"] for e in entities(40))
    by_ref = {r["ref"]: rid for rid, r in target.records.items()}
    assert {k: o["generated_id"] for k, o in outcomes.items()} == by_ref  # found ids kept


async def test_without_a_lookup_lost_responses_are_sent_again(target: TargetApi, write_config, tmp_path) -> None:
    """The contrast of the test above: the duplicates its lookup prevents."""
    target.honour_idempotency = False
    target.chaos(0.3, seed=4, kinds=({"lost": True},))
    cfg = write_config([target_system(target.url), share_pipe("share", entities(40))])
    async with rt(cfg, tmp_path) as r:
        await run_until_sent(r, "share")
    assert len(refs_created(target)) > 40


async def test_rejected_entities_are_retried_on_later_runs_then_dead_lettered(target: TargetApi, write_config,
                                                                              tmp_path) -> None:
    items = entities(5)
    items[3]["name"] = ""  # the target answers 422 with a field list
    cfg = write_config([target_system(target.url), share_pipe("share", items)])
    async with rt(cfg, tmp_path) as r:
        first = await r.run_pipe("share")
        assert first.ok and first.new == 4
        bad = (await ledger(r, "share"))["e003"]
        assert bad["state"] == "failed" and bad["attempt"] == 1 and bad["status"] == 422
        assert bad["response"]["errors"] == [{"field": "name", "message": "required, a non-empty string"}]
        assert not await r.entities("share-dead", limit=10)
        second = await r.run_pipe("share")
        assert second.ok and second.unchanged == 4
        assert (await ledger(r, "share"))["e003"]["attempt"] == 2
        (letter,) = await r.entities("share-dead", limit=10)
    assert letter["key"] == "e003" and letter["attempts"] == 2 and "422" in letter["error"]
    assert len(target.creates()) == 4


async def test_the_error_ratio_gate_stops_sending_mid_run(target: TargetApi, write_config, tmp_path) -> None:
    target.latency = 0.01
    target.chaos(0.5, seed=1, kinds=({"status": 400},))
    pipe = share_pipe("share", entities(200), concurrency=4)
    cfg = write_config([target_system(target.url), pipe])
    async with rt(cfg, tmp_path) as r:
        run = await r.run_pipe("share")
        outcomes = await ledger(r, "share")
    assert not run.ok and "max_error_ratio" in str(run.error)
    posts = [q for q in target.requests if q.startswith("POST")]
    assert 20 <= len(posts) <= 20 + 4  # min_attempts plus the sends in flight
    rejected = [o for o in outcomes.values() if o["state"] == "failed"]
    assert len(rejected) == len(target.drawn) and all(o["status"] == 400 for o in rejected)
    assert len(outcomes) == len(posts)


async def test_payloads_failing_the_schema_are_dead_lettered_never_sent(target: TargetApi, write_config,
                                                                        tmp_path) -> None:
    schema = {"type": "object", "required": ["name", "amount"],
              "properties": {"amount": {"type": "integer", "maximum": 10}}}
    cfg = write_config([target_system(target.url), share_pipe("share", entities(14), schema=schema)])
    async with rt(cfg, tmp_path) as r:
        run = await r.run_pipe("share")
        letters = {d["key"]: d for d in await r.entities("share-dead", limit=100)}
        outcomes = await ledger(r, "share")
    assert run.ok and run.new == 11
    assert sorted(letters) == ["e011", "e012", "e013"]
    assert "properties/amount/maximum" in letters["e011"]["error"]
    assert outcomes["e011"]["state"] == "invalid"
    assert sorted(refs_created(target)) == [f"e{i:03}" for i in range(11)]


async def test_a_rejected_batch_is_split_until_the_bad_entity_is_found(target: TargetApi, write_config,
                                                                       tmp_path) -> None:
    items = entities(64)
    items[37]["amount"] = "many"  # invalid: the batch endpoint rejects every batch holding it
    pipe = share_pipe("share", items, operation="insert-batch", batch_size=64, dead_letters=True)
    cfg = write_config([target_system(target.url), pipe])
    async with rt(cfg, tmp_path) as r:
        run = await r.run_pipe("share")
        outcomes = await ledger(r, "share")
    batches = [q for q in target.requests if q == "POST /records/batch"]
    assert run.ok and run.new == 63
    assert len(batches) <= 13  # 2 * log2(64) + 1
    assert outcomes["e037"]["state"] == "failed" and outcomes["e037"]["status"] == 422
    assert len(target.records) == 63
