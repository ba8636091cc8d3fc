"""Entities a sink keeps refusing: retried on later runs, then dead-lettered (Sesam's
max_retries_per_entity and dead_letter_dataset)."""

from __future__ import annotations

from typing import ClassVar, Literal

from runtime import ComponentConfig, EntityError, Runtime, Sink, WriteResult
from runtime.plugins import default_registry
from tests.core.helpers import dataset_pipe, file_pipe, write_ndjson

WRITTEN: dict[str, dict] = {}


class PickyConfig(ComponentConfig):
    type: Literal["picky"]


class PickySink(Sink):
    """Refuses entities with ``refuse: true`` (an EntityError for the whole batch, like a bulk API)."""

    Config: ClassVar = PickyConfig

    async def write(self, entities):
        bad = [e["_id"] for e in entities if e.get("refuse")]
        if bad:
            raise EntityError(f"target refused {bad}", entity_id=bad[0])
        WRITTEN.update({e["_id"]: e for e in entities})
        return WriteResult(new=len(entities))


def registry():
    r = default_registry().clone()
    r.register("sink", "picky", PickySink)
    return r


def rows(refuse: set[int]) -> list[dict]:
    return [{"id": i, "refuse": i in refuse} for i in range(6)]


async def run_once(tmp_path, cfg):
    async with Runtime(cfg, data_dir=tmp_path / "state", registry=registry()) as rt:
        result = await rt.run_pipe("p")
        retries = await rt.store.entity_retries("p")
        letters = await rt.entities("letters")
        return result, retries, letters


async def test_refused_entities_are_retried_then_dead_lettered(tmp_path, write_config):
    WRITTEN.clear()
    data = tmp_path / "config" / "data" / "rows.ndjson"
    write_ndjson(data, rows({2}))
    pump = {"dead_letter_dataset": "letters", "max_retries_per_entity": 2}
    cfg = write_config([file_pipe("p", "data/rows.ndjson", batch_size=3, pump=pump, sink={"type": "picky"})])
    first, retries, letters = await run_once(tmp_path, cfg)
    assert first.status == "completed" and sorted(WRITTEN) == ["0", "1", "3", "4", "5"]
    assert [(k, attempts) for k, _, attempts, _ in retries] == [("2", 1)] and letters == []
    second, retries, letters = await run_once(tmp_path, cfg)
    assert second.status == "completed"
    assert [(e["_id"], e["key"], e["attempts"]) for e in letters] == [("p:2", "2", 2)]
    assert "target refused ['2']" in letters[0]["error"] and letters[0]["entity"]["id"] == 2


async def test_a_later_successful_write_clears_the_retry(tmp_path, write_config):
    WRITTEN.clear()
    data = tmp_path / "config" / "data" / "rows.ndjson"
    write_ndjson(data, rows({4}))
    pump = {"dead_letter_dataset": "letters", "max_retries_per_entity": 2}
    cfg = write_config([file_pipe("p", "data/rows.ndjson", pump=pump, sink={"type": "picky"})])
    _, retries, _ = await run_once(tmp_path, cfg)
    assert [k for k, *_ in retries] == ["4"]
    write_ndjson(data, rows(set()))  # the source fixed it: the replay of the old version fails (2nd
    # attempt, the maximum) before the fixed version is written, and that is no reason for a letter
    result, retries, letters = await run_once(tmp_path, cfg)
    assert result.ok and retries == [] and letters == [] and WRITTEN["4"]["refuse"] is False


async def test_an_entity_the_source_no_longer_sends_expires_at_a_full_run(tmp_path, write_config):
    WRITTEN.clear()
    data = tmp_path / "config" / "data" / "rows.ndjson"
    write_ndjson(data, rows({2}))
    pump = {"dead_letter_dataset": "letters", "max_retries_per_entity": 2}
    cfg = write_config([file_pipe("p", "data/rows.ndjson", pump=pump, sink={"type": "picky"})])
    await run_once(tmp_path, cfg)
    write_ndjson(data, [r for r in rows({2}) if r["id"] != 2])  # deleted at the source
    result, retries, letters = await run_once(tmp_path, cfg)
    assert (result.ok, result.kind, retries, letters) == (True, "full", [], [])


async def test_an_incremental_run_dead_letters_what_its_replay_still_fails(tmp_path, write_config):
    """A chronological source does not send the entity again: the replay alone shows it fails."""
    WRITTEN.clear()
    data = tmp_path / "config" / "data" / "rows.ndjson"
    write_ndjson(data, rows({3}))
    pump = {"dead_letter_dataset": "letters", "max_retries_per_entity": 2}
    cfg = write_config([file_pipe("rows", "data/rows.ndjson"),
                        dataset_pipe("p", "rows", pump=pump, sink={"type": "picky"})])
    async with Runtime(cfg, data_dir=tmp_path / "state", registry=registry()) as rt:
        await rt.run_pipe("rows")
        await rt.run_pipe("p")
        again = await rt.run_pipe("p")
        assert (again.kind, again.read) == ("incremental", 0)
        assert [e["key"] for e in await rt.entities("letters")] == ["3"]
        assert await rt.store.entity_retries("p") == []


async def test_an_entity_refused_for_its_content_and_fixed_at_the_source_is_no_dead_letter(
    tmp_path, write_config
):
    """Keyed by content hash, the old form was replayed every run and dead-lettered after
    max_retries_per_entity although the dataset has the fixed entity."""
    data = tmp_path / "config" / "data" / "rows.ndjson"
    write_ndjson(data, [{"id": 1, "broken": True}, {"id": 2}])
    (tmp_path / "config" / "ids.py").write_text(
        "def ids(es):\n    return [{**e, '_id': e['id']} if e.get('broken') else e for e in es]\n")
    pump = {"dead_letter_dataset": "letters", "max_retries_per_entity": 2}
    cfg = write_config([file_pipe("p", "data/rows.ndjson", pump=pump,
                                  transform={"type": "python", "function": "ids:ids"})])
    _, retries, _ = await run_once(tmp_path, cfg)
    assert [k[:5] for k, *_ in retries] == ["hash:"]
    write_ndjson(data, [{"id": 1}, {"id": 2}])  # fixed
    result, retries, letters = await run_once(tmp_path, cfg)
    assert result.ok and retries == [] and letters == []
    async with Runtime(cfg, data_dir=tmp_path / "state", registry=registry()) as rt:
        assert sorted(e["_id"] for e in await rt.entities("p")) == ["1", "2"]
        assert (await rt.run_pipe("p")).ok and await rt.entities("letters") == []


async def test_without_a_dead_letter_dataset_the_run_fails(tmp_path, write_config):
    data = tmp_path / "config" / "data" / "rows.ndjson"
    write_ndjson(data, rows({1}))
    cfg = write_config([file_pipe("p", "data/rows.ndjson", sink={"type": "picky"})])
    result, retries, _ = await run_once(tmp_path, cfg)
    assert result.status == "failed" and "target refused" in str(result.error) and retries == []


async def test_dataset_sink_entity_without_id_is_dead_lettered(tmp_path, write_config):
    data = tmp_path / "config" / "data" / "rows.ndjson"
    write_ndjson(data, [{"id": i} for i in range(4)])
    (tmp_path / "config" / "noid.py").write_text(
        "def drop(es):\n    return [{k: v for k, v in e.items() if not (k == '_id' and e['id'] == 1)} for e in es]\n")
    pump = {"dead_letter_dataset": "letters", "max_retries_per_entity": 1}
    cfg = write_config([file_pipe("p", "data/rows.ndjson", pump=pump,
                                  transform={"type": "python", "function": "noid:drop"})])
    result, retries, letters = await run_once(tmp_path, cfg)
    assert result.ok and result.new == 3 and retries == []
    assert len(letters) == 1 and letters[0]["key"].startswith("hash:") and "no string _id" in letters[0]["error"]


async def test_a_resumed_full_run_does_not_expire_what_it_did_not_reread(tmp_path, write_config):
    """Entities read before a full run was stopped are not sent again when it is resumed: their
    entries stay (and are dead-lettered once exhausted), they do not expire."""
    WRITTEN.clear()
    write_ndjson(tmp_path / "config" / "data" / "rows.ndjson", [{"id": i, "refuse": i == 1} for i in range(50)])
    pump = {"dead_letter_dataset": "letters", "max_retries_per_entity": 2}
    cfg = write_config([file_pipe("rows", "data/rows.ndjson"),
                        dataset_pipe("p", "rows", pump=pump, batch_size=1, sink={"type": "picky"})])
    async with Runtime(cfg, data_dir=tmp_path / "state", registry=registry()) as rt:
        await rt.run_pipe("rows")

        def stop_after_two(result):
            if result.read >= 2:  # ids 0 and 1 are committed (the sink goes in order)
                rt.running["p"].stop()

        first = await rt.run_pipe("p", on_progress=stop_after_two)
        assert (first.status, first.kind) == ("stopped", "full") and first.read < 50
        assert [k for k, *_ in await rt.store.entity_retries("p")] == ["1"]
        resumed = await rt.run_pipe("p")
        assert (resumed.status, resumed.kind, resumed.read) == ("completed", "full", 50 - first.read)
        assert [e["key"] for e in await rt.entities("letters")] == ["1"]
