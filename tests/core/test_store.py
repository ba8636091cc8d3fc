"""The state store (SQLite and PostgreSQL: the ``store`` fixture runs each test on both): no-op
writes, compaction, atomicity, breaker, work units, logs; and each backend's schema migrations."""

import pytest

from runtime.errors import EntityError, OperationRefusedError
from runtime.store import Checkpoint
from runtime.store.protocol import RunStart
from tests.core.helpers import is_postgres, pg_rows


async def test_write_assigns_offsets_and_generated_fields(store):
    r = await store.write_batch("ds", [{"_id": "a", "v": 1}, {"_id": "b", "v": 2}], pipe="p", checkpoint=None)
    assert (r.new, r.changed, r.unchanged) == (2, 0, 0)
    got, end = await store.read("ds", since=None, limit=10)
    assert [e["_updated"] for e in got] == [0, 1] and end == 1
    assert got[0]["_previous"] is None and len(got[0]["_hash"]) == 32 and got[0]["_ts"] > 0


async def test_rewriting_identical_entities_is_a_noop(store):
    batch = [{"_id": str(i), "v": i} for i in range(50)]
    await store.write_batch("ds", batch, pipe="p", checkpoint=None)
    again = [{**e, "_ts": 123, "_updated": 999} for e in reversed(batch)]
    r = await store.write_batch("ds", again, pipe="p", checkpoint=None)
    assert (r.new, r.changed, r.deleted, r.unchanged) == (0, 0, 0, 50)
    assert (await store.dataset_info("ds")).next_offset == 50


async def test_changed_entity_gets_new_version_linked_to_previous(store):
    await store.write_batch("ds", [{"_id": "a", "v": 1}], pipe="p", checkpoint=None)
    r = await store.write_batch("ds", [{"_id": "a", "v": 2}], pipe="p", checkpoint=None)
    assert r.changed == 1
    versions = await store.get("ds", "a", history=True)
    assert [v["v"] for v in versions] == [1, 2] and versions[1]["_previous"] == 0


async def test_same_id_twice_in_one_batch_keeps_order(store):
    r = await store.write_batch("ds", [{"_id": "a", "v": 1}, {"_id": "a", "v": 2}, {"_id": "a", "v": 2}],
                                pipe="p", checkpoint=None, keep_versions=None)
    assert (r.new, r.changed, r.unchanged) == (1, 1, 1)
    assert [e["v"] for e in await store.get("ds", "a", history=True)] == [1, 2]


async def test_compaction_keeps_two_versions_by_default(store):
    for v in range(5):
        await store.write_batch("ds", [{"_id": "a", "v": v}, {"_id": "b", "v": 0}], pipe="p", checkpoint=None)
    assert [e["v"] for e in await store.get("ds", "a", history=True)] == [3, 4]
    assert len(await store.get("ds", "b", history=True)) == 1


async def test_keep_versions_none_keeps_history(store):
    for v in range(5):
        await store.write_batch("ds", [{"_id": "a", "v": v}], pipe="p", checkpoint=None, keep_versions=None)
    history, _ = await store.read("ds", since=None, limit=100, history=True)
    assert [e["v"] for e in history] == [0, 1, 2, 3, 4]
    latest, _ = await store.read("ds", since=None, limit=100)
    assert [e["v"] for e in latest] == [4]


async def test_full_compaction_command(store):
    for v in range(4):
        await store.write_batch("ds", [{"_id": "a", "v": v}], pipe="p", checkpoint=None, keep_versions=None)
    assert await store.compact("ds", 1) == 3
    assert [e["v"] for e in await store.get("ds", "a", history=True)] == [3]


async def test_batch_and_checkpoint_commit_together_or_not_at_all(store):
    await store.write_batch("ds", [{"_id": "a"}], pipe="p", checkpoint=Checkpoint(since=1))
    with pytest.raises(EntityError, match="no string _id"):
        await store.write_batch("ds", [{"_id": "b"}, {"x": 1}], pipe="p", checkpoint=Checkpoint(since=2))
    assert (await store.pipe_state("p")).since == 1
    got, _ = await store.read("ds", since=None, limit=10)
    assert [e["_id"] for e in got] == ["a"]
    assert (await store.dataset_info("ds")).next_offset == 1


async def test_deletion_of_unknown_id_is_not_written(store):
    r = await store.write_batch("ds", [{"_id": "ghost", "_deleted": True}], pipe="p", checkpoint=None)
    assert r.changes == 0 and await store.dataset_info("ds") is not None
    assert await store.get("ds", "ghost") == []


async def test_a_write_with_if_hash_applies_only_over_that_version(store):
    await store.write_batch("ds", [{"_id": "a", "v": 1}, {"_id": "b", "v": 1}], pipe="p", checkpoint=None)
    h_a = (await store.get("ds", "a"))[0]["_hash"]
    h_b = (await store.get("ds", "b"))[0]["_hash"]
    await store.write_batch("ds", [{"_id": "b", "v": 2}], pipe="p", checkpoint=None)  # b moved on
    r = await store.write_batch("ds", [{"_id": "a", "_deleted": True, "_if_hash": h_a},
                                       {"_id": "b", "_deleted": True, "_if_hash": h_b},
                                       {"_id": "ghost", "_deleted": True, "_if_hash": h_a}],
                                pipe="p", checkpoint=None)
    assert (r.deleted, r.unchanged) == (1, 2)
    a, b = (await store.get("ds", "a"))[0], (await store.get("ds", "b"))[0]
    assert a["_deleted"] is True and "_if_hash" not in a
    assert b["v"] == 2 and "_deleted" not in b
    assert await store.get("ds", "ghost") == []


async def test_if_hash_sees_a_version_written_earlier_in_the_same_batch(store):
    await store.write_batch("ds", [{"_id": "x", "v": 1}], pipe="p", checkpoint=None)
    old = (await store.get("ds", "x"))[0]["_hash"]
    r = await store.write_batch("ds", [{"_id": "x", "v": 2}, {"_id": "x", "_deleted": True, "_if_hash": old}],
                                pipe="p", checkpoint=None)
    assert (r.changed, r.deleted, r.unchanged) == (1, 0, 1)
    assert (await store.get("ds", "x"))[0]["v"] == 2
    new = (await store.get("ds", "x"))[0]["_hash"]
    r = await store.write_batch("ds", [{"_id": "x", "_deleted": True, "_if_hash": new},
                                       {"_id": "x", "v": 3, "_if_hash": new}], pipe="p", checkpoint=None)
    assert (r.deleted, r.unchanged) == (1, 1)  # the second's version is the deletion now
    assert (await store.get("ds", "x"))[0]["_deleted"] is True


@pytest.mark.parametrize("bad", [5, "ABCDEF" * 5 + "AB", "f" * 31, None])
async def test_an_if_hash_not_a_hash_is_refused_naming_the_entity(store, bad):
    entity = {"_id": "zed", "_if_hash": bad} if bad is not None else {"_id": "zed", "_if_hash": "f" * 32 + "\n"}
    with pytest.raises(EntityError, match=r"_if_hash must be a _hash.*zed") as info:
        await store.write_batch("ds", [{"_id": "ok"}, entity], pipe="p", checkpoint=None)
    assert info.value.entity_id == "zed"
    assert await store.get("ds", "zed") == [] and await store.get("ds", "ok") == []  # nothing of the batch


async def test_read_since_is_exclusive_and_pages(store):
    await store.write_batch("ds", [{"_id": str(i)} for i in range(10)], pipe="p", checkpoint=None)
    page, end = await store.read("ds", since=3, limit=4)
    assert [e["_updated"] for e in page] == [4, 5, 6, 7] and end == 7
    page, end = await store.read("ds", since=7, limit=4)
    assert [e["_updated"] for e in page] == [8, 9] and end == 9
    page, end = await store.read("ds", since=9, limit=4)
    assert page == [] and end == 9
    assert await store.read("missing", since=None, limit=4) == ([], None)


async def test_circuit_breaker_holds_changes_past_the_limit(store):
    await store.write_batch("ds", [{"_id": str(i)} for i in range(4)], pipe="p", checkpoint=Checkpoint(since=10))
    r = await store.write_batch("ds", [{"_id": str(i), "x": 1} for i in range(4)], pipe="p",
                                checkpoint=Checkpoint(since=20), change_limit=1)
    assert r.tripped and r.changed == 4
    info = await store.dataset_info("ds")
    assert info.trip.pipe == "p" and info.trip.since == 10 and info.committed == 4
    visible, _ = await store.read("ds", since=None, limit=100)
    assert sorted(e.get("x", 0) for e in visible) == [0, 0, 0, 1]
    assert await store.rollback_breaker("ds") == 3
    info = await store.dataset_info("ds")
    assert info.trip is None and info.next_offset == 5
    assert (await store.pipe_state("p")).since == 10
    # the index was rebuilt: re-writing a rolled-back change is a change again, not a no-op
    r = await store.write_batch("ds", [{"_id": "3", "x": 1}], pipe="p", checkpoint=None)
    assert r.changed == 1


async def test_circuit_breaker_commit_exposes_held_versions(store):
    await store.write_batch("ds", [{"_id": "a"}], pipe="p", checkpoint=None)
    await store.write_batch("ds", [{"_id": "a", "v": 1}, {"_id": "b"}], pipe="p", checkpoint=None, change_limit=0)
    assert (await store.dataset_info("ds")).committed == 0
    assert await store.commit_breaker("ds") == 2
    assert {e["_id"] for e in (await store.read("ds", since=None, limit=9))[0]} == {"a", "b"}
    with pytest.raises(OperationRefusedError):
        await store.commit_breaker("ds")


async def test_unseen_lists_ids_not_marked_by_the_sweep(store):
    await store.write_batch("ds", [{"_id": c} for c in "abc"], pipe="p", checkpoint=None, sweep=1)
    await store.write_batch("ds", [{"_id": "a"}, {"_id": "b"}], pipe="p", checkpoint=None, sweep=2)
    assert [e["_id"] for e in await store.unseen("ds", 2, 10)] == ["c"]


async def test_pipe_state_info_and_execution_log(store):
    await store.update_pipe_info("p", {"runs": 1})
    await store.update_pipe_info("p", {"last_run": {"status": "completed"}})
    state = await store.pipe_state("p")
    assert state.info == {"runs": 1, "last_run": {"status": "completed"}}
    await store.log_event("p", "r1", "run-started", {})
    await store.log_event("p", "r1", "run-completed", {"new": 3})
    events = await store.execution_log("p")
    assert [e.event for e in events] == ["run-started", "run-completed"]
    assert (await store.execution_log("p", since=events[0].seq))[0].data == {"new": 3}


async def test_id_and_deleted_counters_follow_writes_and_rollback(store):
    await store.write_batch("ds", [{"_id": c} for c in "abcd"], pipe="p", checkpoint=None)
    await store.write_batch("ds", [{"_id": "a", "_deleted": True}, {"_id": "b", "_deleted": True}],
                            pipe="p", checkpoint=None)
    await store.write_batch("ds", [{"_id": "a"}, {"_id": "e"}], pipe="p", checkpoint=None)  # undelete a
    info = await store.dataset_info("ds")
    assert (info.ids, info.deleted) == (5, 1)
    await store.write_batch("ds", [{"_id": "c", "_deleted": True}, {"_id": "f"}], pipe="p",
                            checkpoint=None, change_limit=0)
    held = await store.dataset_info("ds")
    assert (held.ids, held.deleted, held.held) == (5, 1, 2)  # what readers see; the held versions apart
    await store.rollback_breaker("ds")
    info = await store.dataset_info("ds")
    assert (info.ids, info.deleted) == (5, 1)


async def test_store_written_by_an_older_version_is_migrated(tmp_path):
    import sqlite3

    from runtime.store import SqliteStore

    path = tmp_path / "old.db"
    s = SqliteStore(path)
    await s.open()
    await s.write_batch("ds", [{"_id": "a"}, {"_id": "c"}], pipe="p", checkpoint=None)
    await s.write_batch("ds", [{"_id": "c", "_deleted": True}], pipe="p", checkpoint=None)
    await s.close()
    with sqlite3.connect(path) as c:  # the schema of version 0: no counters, user_version 0
        c.execute("ALTER TABLE datasets DROP COLUMN ids")
        c.execute("ALTER TABLE datasets DROP COLUMN deleted")
        c.execute("PRAGMA user_version = 0")
    s = SqliteStore(path)
    await s.open()
    try:
        info = await s.dataset_info("ds")
        assert (info.ids, info.deleted) == (2, 1)
    finally:
        await s.close()


async def test_breaker_commit_compacts_the_exposed_ids(store):
    await store.write_batch("ds", [{"_id": "x", "v": 0}], pipe="p", checkpoint=None, keep_versions=1)
    for v in (1, 2):
        await store.write_batch("ds", [{"_id": "x", "v": v}], pipe="p", checkpoint=None,
                                keep_versions=1, change_limit=0)
    assert await store.commit_breaker("ds", keep_versions=1) == 2
    assert [e["v"] for e in await store.get("ds", "x", history=True)] == [2]


async def test_populate_is_set_with_the_checkpoint(store):
    await store.write_batch("ds", [], pipe="p", checkpoint=Checkpoint(since=3), populate=True)
    assert (await store.dataset_info("ds")).populated and (await store.pipe_state("p")).since == 3


async def test_seen_marks_never_spill_onto_ids_between_those_of_a_batch(store):
    await store.write_batch("ds", [{"_id": c} for c in "amz"], pipe="p", checkpoint=None, sweep=1)
    r = await store.write_batch("ds", [{"_id": "a"}, {"_id": "z"}], pipe="p", checkpoint=None, sweep=2)
    assert r.unchanged == 2
    assert [e["_id"] for e in await store.unseen("ds", 2, 10)] == ["m"]
    r = await store.write_batch("ds", [{"_id": "m"}, {"_id": "n"}], pipe="p", checkpoint=None, sweep=2)
    assert (r.unchanged, r.new) == (1, 1) and await store.unseen("ds", 2, 10) == []


async def test_seen_marks_of_compacted_versions_are_dropped(store):
    import sqlite3

    await store.write_batch("ds", [{"_id": "a", "v": 1}], pipe="p", checkpoint=None, sweep=1)
    await store.write_batch("ds", [{"_id": "a", "v": 1}], pipe="p", checkpoint=None, sweep=2)  # marks off 0
    for v in (2, 3):
        await store.write_batch("ds", [{"_id": "a", "v": v}], pipe="p", checkpoint=None, keep_versions=1)
    if is_postgres(store):
        assert await pg_rows(store, "SELECT off FROM seen") == []  # offset 0 is compacted away
    else:
        with sqlite3.connect(store.path) as c:
            assert c.execute("SELECT off FROM seen_1").fetchall() == []  # offset 0 is compacted away
    assert [e["v"] for e in await store.unseen("ds", 2, 10)] == [3]


async def test_an_id_twice_in_a_full_run_batch_is_marked_seen(store):
    await store.write_batch("ds", [{"_id": "a", "v": 1}, {"_id": "b"}], pipe="p", checkpoint=None, sweep=1)
    r = await store.write_batch("ds", [{"_id": "a", "v": 1}, {"_id": "a", "v": 1}, {"_id": "b"}],
                                pipe="p", checkpoint=None, sweep=2)
    assert (r.new, r.changed, r.unchanged) == (0, 0, 3)
    assert await store.unseen("ds", 2, 10) == []
    r = await store.write_batch("ds", [{"_id": "a", "v": 2}, {"_id": "a", "v": 1}], pipe="p", checkpoint=None,
                                sweep=3, keep_versions=None)
    assert (r.changed, r.unchanged) == (2, 0)  # back to v1 after v2 is a change, not a no-op
    assert [e["v"] for e in await store.get("ds", "a", history=True)] == [1, 2, 1]


@pytest.mark.parametrize("eid", ['quo"te', "back\\slash", "\\u0000", "ünï", "emoji 🚰", "line\u2028sep", "", " ", "{}"])
async def test_awkward_ids_are_recognised_as_unchanged(store, eid):
    await store.write_batch("ds", [{"_id": eid, "v": 1}, {"_id": "z"}], pipe="p", checkpoint=None, sweep=1)
    r = await store.write_batch("ds", [{"_id": eid, "v": 1}, {"_id": "z"}], pipe="p", checkpoint=None, sweep=2)
    assert (r.new, r.changed, r.unchanged) == (0, 0, 2)
    assert await store.unseen("ds", 2, 10) == []
    assert [e["v"] for e in await store.get("ds", eid, history=True)] == [1]


async def test_ids_with_nul_are_not_confused_with_their_prefix(store):
    ids = ["nul", "nul\x00", "nul\x00byte", "\x00"]
    await store.write_batch("ds", [{"_id": e, "v": n} for n, e in enumerate(ids)], pipe="p", checkpoint=None, sweep=1)
    assert [len(await store.get("ds", e)) for e in ids] == [1, 1, 1, 1]
    r = await store.write_batch("ds", [{"_id": "nul\x00byte", "v": 2}, {"_id": "nul\x00", "v": 9}],
                                pipe="p", checkpoint=None, sweep=2)
    assert (r.new, r.changed, r.unchanged) == (0, 1, 1)
    assert sorted(e["v"] for e in await store.unseen("ds", 2, 10)) == [0, 3]
    assert [e["v"] for e in await store.get("ds", "nul\x00", history=True)] == [1, 9]


async def test_store_of_schema_version_2_gets_its_seen_tables(tmp_path):
    import sqlite3

    from runtime.store import SqliteStore

    path = tmp_path / "v2.db"
    s = SqliteStore(path)
    await s.open()
    await s.write_batch("ds", [{"_id": "a"}, {"_id": "b"}], pipe="p", checkpoint=None, sweep=1)
    await s.close()
    with sqlite3.connect(path) as c:  # version 2 created seen_N on first use only
        c.execute("DROP TABLE seen_1")
        c.execute("PRAGMA user_version = 2")
    s = SqliteStore(path)
    await s.open()
    try:
        r = await s.write_batch("ds", [{"_id": "a"}], pipe="p", checkpoint=None, sweep=2)
        assert r.unchanged == 1 and [e["_id"] for e in await s.unseen("ds", 2, 10)] == ["b"]
    finally:
        await s.close()


async def test_a_dataset_created_by_an_older_sluice_after_the_upgrade_gets_its_seen_table(tmp_path):
    import sqlite3

    from runtime.store import SqliteStore

    path = tmp_path / "mixed.db"
    s = SqliteStore(path)
    await s.open()
    await s.write_batch("a", [{"_id": "x"}], pipe="p", checkpoint=None)
    await s.write_batch("c", [{"_id": "x"}, {"_id": "y"}], pipe="q", checkpoint=None, sweep=1)
    await s.close()
    with sqlite3.connect(path) as c:  # what a Sluice of schema 2 leaves: version 3 kept, no seen_2
        c.execute("DROP TABLE seen_2")
    s = SqliteStore(path)
    await s.open()
    try:
        r = await s.write_batch("c", [{"_id": "x"}], pipe="q", checkpoint=None, sweep=7)
        assert r.unchanged == 1 and [e["_id"] for e in await s.unseen("c", 7, 10)] == ["y"]
    finally:
        await s.close()


async def test_a_store_of_a_newer_schema_is_refused(tmp_path):
    import sqlite3

    from runtime.errors import StoreError
    from runtime.store import SqliteStore

    path = tmp_path / "newer.db"
    s = SqliteStore(path)
    await s.open()
    await s.close()
    with sqlite3.connect(path) as c:
        c.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="schema version 99, written by a newer Sluice"):
        await SqliteStore(path).open()


async def test_a_postgresql_store_of_a_newer_schema_is_refused(postgres_server, postgres_template):
    from runtime.errors import StoreError
    from runtime.store import PostgresStore

    url = await postgres_server.create_database("newer_schema", template=postgres_template)
    s = PostgresStore(url)
    await s.open()
    await s.close()
    await pg_rows(s, "UPDATE sluice_schema SET version = 99")
    with pytest.raises(StoreError, match="schema version 99, written by a newer Sluice"):
        await PostgresStore(url).open()


async def test_a_postgresql_store_of_version_3_gets_its_run_floors(postgres_server, postgres_template):
    """Version 4 added the table of where each pipe's last run started (compaction keeps what a
    rollback of that run restores): a version-2 store gets it, and compaction then honours it."""
    from runtime.store import PostgresStore

    url = await postgres_server.create_database("version_3", template=postgres_template)
    s = PostgresStore(url)
    await s.open()
    await s.write_batch("ds", [{"_id": "a", "v": 0}], pipe="p", checkpoint=None)
    await s.close()
    await pg_rows(s, "DROP TABLE run_floors")
    await pg_rows(s, "UPDATE sluice_schema SET version = 3")
    s = PostgresStore(url)
    await s.open()
    try:
        await s.write_batch("ds", [{"_id": "a", "v": 1}], pipe="p", checkpoint=None,
                            run_start=RunStart(1, Checkpoint()))
        assert await s.compact("ds", 1) == 0  # v0 is what a rollback of the run from offset 1 restores
        assert await pg_rows(s, "SELECT pipe, off FROM run_floors") == [("p", 1)]
    finally:
        await s.close()


async def test_postgresql_stores_opened_at_once_create_one_schema(postgres_server):
    import anyio

    from runtime.store import PostgresStore
    from runtime.store.postgres.schema import SCHEMA_VERSION

    url = await postgres_server.create_database("opened_at_once")
    stores = [PostgresStore(url) for _ in range(4)]
    async with anyio.create_task_group() as tg:  # the migration lock: no "relation already exists"
        for s in stores:
            tg.start_soon(s.open)
    try:
        assert await pg_rows(stores[0], "SELECT version FROM sluice_schema") == [(SCHEMA_VERSION,)]
    finally:
        for s in stores:
            await s.close()


async def test_the_pipe_lock_names_its_holder_to_another_process(store, tmp_path):
    from runtime.store import PostgresStore, SqliteStore

    other = PostgresStore(store.dsn) if is_postgres(store) else SqliteStore(store.path)
    await other.open()  # a second store on the same state: what another process sees
    try:
        async with store.pipe_lock("p", "run 3f2a"):
            with pytest.raises(OperationRefusedError, match="run 3f2a"):
                async with other.pipe_lock("p", "run 9b9b"):
                    pass
        async with other.pipe_lock("p", "run 9b9b"):  # released with the block
            pass
    finally:
        await other.close()
