"""Leases and fencing at the store: two cluster members' stores on one temporary PostgreSQL
database, leases of 0.3 s, no daemon (the heartbeat is called by hand, so expiry is exact)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import asyncpg
import pytest

from runtime.cluster.member import new_membership
from runtime.errors import FencedError, LeaseHeldError
from runtime.store import PostgresStore
from runtime.store.protocol import Checkpoint, UnitProgress
from tests.conftest import new_postgres_url

LEASE_S = 0.3


@pytest.fixture
async def members(request: pytest.FixtureRequest) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    url = await new_postgres_url(request)
    stores = (PostgresStore(url), PostgresStore(url))
    for s in stores:
        await s.open()
        s.cluster = new_membership(LEASE_S)
        await s.cluster_sessions()
        await s.cluster_heartbeat()
    try:
        yield stores
    finally:
        for s in stores:
            await s.close()


def entity(eid: str, by: str) -> dict[str, str]:
    return {"_id": eid, "by": by}


async def test_one_member_runs_a_pipe_at_a_time(members: tuple[PostgresStore, PostgresStore]) -> None:
    a, b = members
    async with a.pipe_lock("p", holder="run 1"):
        with pytest.raises(LeaseHeldError, match="running on another cluster member"):
            async with b.pipe_lock("p"):
                pass
        outside = PostgresStore(a.dsn)  # `sluice run` on the same store: not a member
        await outside.open()
        try:
            with pytest.raises(LeaseHeldError, match="running in the cluster"):
                async with outside.pipe_lock("p"):
                    pass
        finally:
            await outside.close()
    async with b.pipe_lock("p"):  # released at the end of the block: taken at once
        pass


async def test_expired_pipe_lease_is_taken_and_the_old_holder_fenced(
        members: tuple[PostgresStore, PostgresStore]) -> None:
    a, b = members
    async with a.pipe_lock("p"):
        await a.write_batch("out", [entity("x", "a")], pipe="p", checkpoint=Checkpoint(1))
        await anyio.sleep(LEASE_S * 1.5)  # a "froze": no heartbeat renewed its lease
        async with b.pipe_lock("p"):  # taken at claim time, no reaper
            assert b.cluster is not None and b.cluster.leases["pipe:p"] == 2  # the epoch moved on
            await b.write_batch("out", [entity("x", "b")], pipe="p", checkpoint=Checkpoint(2))
            with pytest.raises(FencedError, match="lost the lease of its run"):
                await a.write_batch("out", [entity("y", "a")], pipe="p", checkpoint=Checkpoint(3))
            assert "pipe:p" in (await a.cluster_heartbeat())  # a learns it lost the lease
    assert [e["by"] for e in await a.get("out", "x", history=True)] == ["a", "b"]
    assert await a.get("out", "y") == []  # the fenced commit changed no row
    assert (await a.pipe_state("p")).since == 2


async def test_unit_claims_fenced_by_epoch(members: tuple[PostgresStore, PostgresStore]) -> None:
    a, b = members
    for s in members:
        assert s.cluster is not None
        s.cluster.shared, s.cluster.limits = {"p"}, {"p": 2}
    await a.plan_units("p", [("k1", {}, False), ("k2", {}, False)])
    await a.cluster_heartbeat()
    await b.cluster_heartbeat()
    async with a.pipe_lock("p"):
        mine = await a.claim_units("p", "run-a", limit=10, lease_s=300)
        assert [u.key for u in mine] == ["k1"]  # its share of the limit: ceil(2 / 2 live members)
        await anyio.sleep(LEASE_S * 1.5)  # a froze: its unit's lease expired
        async with b.pipe_lock("p"):  # resumes a's run (no planning, no preparing)
            await b.cluster_heartbeat()
            theirs = await b.claim_units("p", "run-b", limit=10, lease_s=300)
            assert [u.key for u in theirs] == ["k1", "k2"]  # the only live member: the whole limit
            done = {"k1": UnitProgress("done")}
            with pytest.raises(FencedError, match="lost the lease of work unit"):
                await a.write_batch("out", [entity("k1", "a")], pipe="p", checkpoint=Checkpoint(None, None, done))
            await b.write_batch("out", [entity("k1", "b")], pipe="p", checkpoint=Checkpoint(None, None, done))
    assert [e["by"] for e in await a.get("out", "k1", history=True)] == ["b"]  # a's commit: 0 rows
    assert {u.key: u.status for u in await a.work_units("p")} == {"k1": "done", "k2": "pending"}


async def test_a_version_2_store_gains_the_cluster_tables_and_run_floors(postgres_server) -> None:  # type: ignore[no-untyped-def]
    import asyncpg

    from runtime.store.postgres.schema import SCHEMA, SCHEMA_VERSION, TRACKING

    url = await postgres_server.create_database("version_2")
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(SCHEMA + TRACKING + "CREATE TABLE sluice_schema(version integer NOT NULL);"
                           "INSERT INTO sluice_schema VALUES (2)")
        await conn.execute("INSERT INTO work_units(pipe, key, status, attempts) VALUES ('p', 'k', 'done', 0)")
    finally:
        await conn.close()
    store = PostgresStore(url)
    await store.open()
    try:
        store.cluster = new_membership(LEASE_S)
        await store.cluster_heartbeat()
        assert (await store.cluster_overview())["members"][0]["member"] == store.cluster.member
        assert [u.status for u in await store.work_units("p")] == ["done"]
    finally:
        await store.close()
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT version FROM sluice_schema") == SCHEMA_VERSION == 4
        assert await conn.fetchval("SELECT lease_epoch FROM work_units") == 0
        assert await conn.fetchval("SELECT count(*) FROM run_floors") == 0
    finally:
        await conn.close()


async def test_a_session_idle_in_a_transaction_past_the_lease_is_ended(
        members: tuple[PostgresStore, PostgresStore]) -> None:
    """A member frozen inside a transaction (here: a pooled connection that holds an advisory
    lock and sends nothing) loses that session after the lease, on every connection of its pool,
    also after connections went back to the pool (whose ``RESET ALL`` once undid the setting)."""
    a, _ = members
    pool = a._p  # the store's own pool: what its transactions run on
    for _ in range(3):
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW idle_in_transaction_session_timeout") == f"{int(LEASE_S * 1000)}ms"
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await conn.execute("SELECT pg_advisory_xact_lock(42)")
        await anyio.sleep(LEASE_S * 4)
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError)):
            await conn.execute("SELECT 1")  # the server ended the session and released the lock
